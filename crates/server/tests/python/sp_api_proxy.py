"""python-amazon-sp-api, unmodified, with lwa-broker as both its token URL and its SP-API endpoint.

The SDK holds a tenant's proxy-only API key (id and secret as `lwa_app_id` / `lwa_client_secret`)
and a broker handle (as `refresh_token`). Two things point it at the broker, nothing else changes:
- `auth_token_client_class` is a subclass of the SDK's own `AccessTokenClient` that only sets
  `scheme` and `host`, so `POST /auth/o2/token` goes to the broker (which answers a proxy-only key
  with a stand-in token `lwas_…`, never Amazon's);
- each client's `endpoint` attribute (where the SDK builds every request URL from) is set to the
  broker's base URL, so SP-API calls go to the broker's root, which proxies them to Amazon.

Calls, all through the SDK's public API:
1. Sellers `getMarketplaceParticipations`;
2. the restricted Orders `getOrderAddress`, the SDK's way: `Tokens.create_restricted_data_token`
   (the broker answers with a stand-in RDT), then an `Orders` client made with
   `restricted_data_token=` that RDT.

Prints one JSON summary on stdout, with every token the SDK held (so the caller can check that
none is Amazon's), and exits 1 when a call failed.

    python sp_api_proxy.py --broker URL --key-id ID --key-secret SECRET --handle H --order-id ID
"""

import argparse
import json
import sys
import traceback
from urllib.parse import urlsplit


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", required=True, help="the broker's base URL")
    p.add_argument("--key-id", required=True, help="proxy-only API key id (lwak_<id>_<secret>)")
    p.add_argument("--key-secret", required=True, help="proxy-only API key secret")
    p.add_argument("--handle", required=True, help="the connection's broker handle")
    p.add_argument("--order-id", required=True, help="an order id, 3-7-7 digits")
    a = p.parse_args(argv)

    from sp_api.__version__ import __version__ as sdk_version
    from sp_api.api import Orders, Sellers, Tokens
    from sp_api.base import Marketplaces

    endpoint = a.broker.rstrip("/")
    common = {
        "credentials": {
            "refresh_token": a.handle,
            "lwa_app_id": a.key_id,
            "lwa_client_secret": a.key_secret,
        },
        "auth_token_client_class": broker_token_client(a.broker),
        "timeout": 60,
    }

    def at_broker(client):
        # Where the SDK builds request URLs from (`endpoint + path`): the broker's root.
        client.endpoint = endpoint
        return client

    summary = {"sdk_version": sdk_version, "endpoint": endpoint, "tokens_held": [], "failures": []}
    held = summary["tokens_held"]

    def step(name, call):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - reported, then the run fails
            summary["failures"].append({"step": name, **describe(exc), "traceback": traceback.format_exc()})
            return None

    # 1. Sellers getMarketplaceParticipations, with the access token the SDK got from the broker.
    def participations():
        sellers = at_broker(Sellers(Marketplaces.US, **common))
        try:
            response = sellers.get_marketplace_participation()
            held.append({"what": "access_token", "value": sellers.auth.access_token})
        finally:
            sellers.close()
        payload = response.payload
        first = payload[0] if isinstance(payload, list) and payload else {}
        return {
            "marketplace_ids": [p.get("marketplace", {}).get("id") for p in payload or []],
            "store_name": first.get("storeName"),
        }

    summary["participations"] = step("getMarketplaceParticipations", participations)

    # 2. createRestrictedDataToken for getOrderAddress, then getOrderAddress with that RDT.
    path = f"/orders/v0/orders/{a.order_id}/address"

    def restricted_data_token():
        tokens = at_broker(Tokens(Marketplaces.US, **common))
        try:
            response = tokens.create_restricted_data_token(
                restrictedResources=[{"method": "GET", "path": path}]
            )
            held.append({"what": "access_token (Tokens client)", "value": tokens.auth.access_token})
        finally:
            tokens.close()
        rdt = response.payload["restrictedDataToken"]
        held.append({"what": "restrictedDataToken", "value": rdt})
        return {"token": rdt, "expires_in": response.payload.get("expiresIn")}

    rdt = step("createRestrictedDataToken", restricted_data_token)
    summary["rdt_expires_in"] = rdt and rdt["expires_in"]

    def order_address():
        orders = at_broker(Orders(Marketplaces.US, restricted_data_token=rdt["token"], **common))
        try:
            response = orders.get_order_address(a.order_id)
            # What the SDK sent as x-amz-access-token for this call.
            held.append({"what": "restricted_data_token (Orders client)", "value": orders.restricted_data_token})
        finally:
            orders.close()
        return response.payload

    if rdt:
        summary["order_address"] = step("getOrderAddress", order_address)

    summary["ok"] = not summary["failures"]
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
