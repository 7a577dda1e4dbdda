"""The response cache: exact and semantic answers reused within a project and route.

`ResponseCache` (keel.cache.service) is what the gateway calls; backends are in-process
(memory) or shared through Redis.
"""
