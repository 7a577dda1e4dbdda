"""A stand-in for `python -m llama_cpp.server` that crashes on cue, run as a script.

It takes the same options, answers GET /v1/models at once, and answers completions with
"ok" — unless the file given as --crash-flag exists: then any completion (the
supervisor's self-test or a user's request) kills it with SIGSEGV, as a model that
crashes llama.cpp at its first inference does. While the --error-flag file exists,
completions answer HTTP 500 instead. Only the standard library, so it starts fast.
"""

from __future__ import annotations

import argparse
import ctypes
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def main() -> None:
    # allow_abbrev=False: --model must not be taken for --model_alias.
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--crash-flag", type=Path, required=True)
    parser.add_argument("--error-flag", type=Path)  # while it exists, completions answer 500
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model_alias", default="standin")
    args, _ = parser.parse_known_args()
    flag: Path = args.crash_flag
    alias: str = args.model_alias

    class Handler(BaseHTTPRequestHandler):
        def _json(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json({"object": "list", "data": [{"id": alias, "object": "model"}]})
            else:
                self._json({"detail": "Not Found"}, 404)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if flag.exists():
                # No flush: the supervisor's unbuffered output must keep this line anyway.
                print(f"standin: crashing on {self.path} while {flag} exists")
                ctypes.string_at(0)  # a real SIGSEGV, raised in this thread before any answer
            if args.error_flag and args.error_flag.exists():
                self._json({"error": {"message": "the model is broken"}}, 500)
                return
            usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
            if self.path == "/v1/completions":
                choice: dict[str, Any] = {"index": 0, "text": "ok", "finish_reason": "length"}
                self._json({"object": "text_completion", "model": alias, "choices": [choice],
                            "usage": usage})  # fmt: skip
            elif self.path == "/v1/chat/completions":
                choice = {"index": 0, "message": {"role": "assistant", "content": "ok"},
                          "finish_reason": "length"}  # fmt: skip
                self._json({"object": "chat.completion", "model": alias, "choices": [choice],
                            "usage": usage})  # fmt: skip
            else:
                self._json({"detail": "Not Found"}, 404)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"standin: serving {alias} on {args.host}:{args.port}")
    server.serve_forever()


if __name__ == "__main__":
    main()
