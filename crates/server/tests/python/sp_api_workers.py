"""python-amazon-sp-api, unmodified, against lwa-broker's LWA-compatible `POST /auth/o2/token`.

The SDK is given `auth_token_client_class=BrokerTokenClient`, a subclass of its own
`AccessTokenClient` that only sets `scheme` and `host` to the broker; its credentials are the
tenant's API key id and secret (as `lwa_app_id` / `lwa_client_secret`) and a broker handle (as
`refresh_token`). The SP-API endpoint is pointed at the fake Amazon by setting the client's
`endpoint` attribute (the fake names the Amazon host in the first path segment).

WORKERS processes (default 8, started with `spawn`, so each has its own SDK token cache) wait at
a barrier, then each calls the Sellers API `getMarketplaceParticipations` once per handle. Prints
one JSON summary on stdout and exits 1 when any call failed.

    python sp_api_workers.py --broker URL --fake URL --key-id ID --key-secret SECRET \
        (--handles-file FILE.json | --handle H [--handle H ...]) [--workers 8]
"""

import argparse
import hashlib
import json
import multiprocessing
import queue
import sys
import traceback
from urllib.parse import urlsplit

SP_API_HOST = "sellingpartnerapi-na.amazon.com"


def broker_token_client(broker_url):
    """The SDK's token client, aimed at the broker: only `scheme` and `host` change."""
    from sp_api.auth import AccessTokenClient

    parts = urlsplit(broker_url)

    class BrokerTokenClient(AccessTokenClient):
        scheme = f"{parts.scheme}://"
        host = parts.netloc

    return BrokerTokenClient


def describe(exc):
    out = {"type": type(exc).__name__, "message": str(exc)}
    for attr in ("code", "error_code", "message", "error", "status_code", "amzn_code"):
        value = getattr(exc, attr, None)
        if value is not None and not callable(value):
            out[attr] = value if isinstance(value, (str, int, list, dict)) else repr(value)
    return out


def worker(index, args, barrier, results):
    summary = {"worker": index, "successes": 0, "calls": [], "failures": []}
    try:
        from sp_api.api import Sellers
        from sp_api.base import Marketplaces

        token_client = broker_token_client(args["broker"])
        endpoint = args["fake"].rstrip("/") + "/" + SP_API_HOST
        barrier.wait(timeout=120)
        for h, handle in enumerate(args["handles"]):
            try:
                sellers = Sellers(
                    Marketplaces.US,
                    credentials={
                        "refresh_token": handle,
                        "lwa_app_id": args["key_id"],
                        "lwa_client_secret": args["key_secret"],
                    },
                    auth_token_client_class=token_client,
                    timeout=60,
                )
                sellers.endpoint = endpoint
                response = sellers.get_marketplace_participation()
                payload = response.payload
                first = payload[0] if isinstance(payload, list) and payload else {}
                # The token the SDK used, from its own cache (hashed: never printed).
                token = sellers.auth.access_token or ""
                sellers.close()
                summary["calls"].append(
                    {
                        "handle": h,
                        "first_marketplace_id": first.get("marketplace", {}).get("id"),
                        "store_name": first.get("storeName"),
                        "access_token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                    }
                )
                summary["successes"] += 1
            except Exception as exc:  # noqa: BLE001 - reported, then the run fails
                summary["failures"].append({"handle": h, **describe(exc)})
    except Exception as exc:  # noqa: BLE001
        summary["failures"].append(
            {"handle": None, **describe(exc), "traceback": traceback.format_exc()}
        )
    results.put(summary)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", required=True, help="the broker's base URL")
    p.add_argument("--fake", required=True, help="the fake Amazon's base URL")
    p.add_argument("--key-id", required=True, help="tenant API key id (lwak_<id>_<secret>)")
    p.add_argument("--key-secret", required=True, help="tenant API key secret")
    p.add_argument("--handles-file", help="JSON file holding a list of handles")
    p.add_argument("--handle", action="append", default=[], help="a handle (repeatable)")
    p.add_argument("--workers", type=int, default=8)
    a = p.parse_args(argv)

    handles = list(a.handle)
    if a.handles_file:
        with open(a.handles_file, encoding="utf-8") as f:
            handles.extend(json.load(f))
    if not handles:
        p.error("no handles given")

    from sp_api.__version__ import __version__ as sdk_version

    args = {
        "broker": a.broker,
        "fake": a.fake,
        "key_id": a.key_id,
        "key_secret": a.key_secret,
        "handles": handles,
    }
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(a.workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(i, args, barrier, results)) for i in range(a.workers)]
    for proc in procs:
        proc.start()
    summaries = []
    for _ in procs:
        try:
            summaries.append(results.get(timeout=300))
        except queue.Empty:
            break
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    summaries.sort(key=lambda s: s["worker"])
    ok = len(summaries) == a.workers and all(
        not s["failures"] and s["successes"] == len(handles) for s in summaries
    )
    print(
        json.dumps(
            {
                "sdk_version": sdk_version,
                "workers": summaries,
                "handles": len(handles),
                "exit_codes": [proc.exitcode for proc in procs],
                "ok": ok,
            },
            indent=2,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
