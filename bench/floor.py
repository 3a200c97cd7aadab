"""The floor: a trivial FastAPI endpoint that reads the body and returns a fixed allowed AdmissionReview,
served by uvicorn exactly as `trustgate serve` is (same TLS and server options).

Run as `python -m bench.floor PORT CERT KEY`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from webhook.cli import server_options

ALLOWED = (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
           b'"response":{"uid":"floor","allowed":true}}')

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/validate")
async def validate(request: Request) -> Response:
    await request.body()
    return Response(ALLOWED, media_type="application/json")


if __name__ == "__main__":
    port, cert, key = sys.argv[1:]
    uvicorn.run(app, **server_options("127.0.0.1", int(port), Path(cert), Path(key)))
