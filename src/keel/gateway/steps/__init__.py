"""The request path's steps, one small class each, in the order `Gateway.handle` runs them.

    2 resolve prompt   prompt.ResolvePrompt
    3 admit            admit.Admit
    4 retrieve         retrieve.Retrieve (citations: retrieve.cite, retrieve.citations_event;
                       groundedness after the answer: retrieve.Ground)
    5 guard input      guard.GuardInput
    6 cache lookup     cache.CacheLookup
    7 route            route.RouteStep
    8 call provider    provider.CallProvider (whole), provider.OpenStream + relay.Relay (SSE)
    9 guard output     guard.RequestGuard.answer (whole), guard.StreamGuard (in the relay)
   10 cache store      cache.CacheStore
   11 record           record.Record (and the response headers, record.render_headers)
   12 settle           the call's Settlement, in Gateway.handle's finally

Step 1 (authenticate) belongs to the caller, which hands over the principal.
Embeddings take one step of their own (embed.Embed).
"""
