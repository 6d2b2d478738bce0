"""The floors the tap is measured against: a bare client reading the same pages.

    python -m bench.floor --info INFO.json --table accounts:col1,col2,... [--write]
    python -m bench.floor --info INFO.json --service-root /data --page-size 10000 \
        --query 'CustomersV3?$select=...&$filter=...&$orderby=...&cross-company=true'

Mode (a), the default, fetches every page of each table exactly like the tap does (same
``$select``, ``$orderby``, ``Prefer: odata.maxpagesize``, following ``@odata.nextLink``) and
parses it with orjson, nothing else. Mode (b), ``--write``, also writes each row as one JSON line
with orjson to stdout. No Singer, no schema, no state: what is left is the cost of HTTP + JSON,
the floor no tap can beat on one core. Prints one JSON line of counters to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

import orjson
import requests


def token(info: dict) -> str:
    """A client-credentials token straight from the (emulated) token endpoint."""
    response = requests.post(
        f"{info['authority_host']}/{info['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
            "scope": f"{info['org_url']}/.default",
        },
        verify=info["ca_bundle"],
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["access_token"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--info", required=True, help="the emulator's connection JSON")
    ap.add_argument("--table", action="append", default=[], metavar="SET:COLS:ORDERBY")
    ap.add_argument("--query", action="append", default=[], metavar="SET?QUERY",
                    help="a read given verbatim (relative to the service root), e.g. one F&O company's chain")
    ap.add_argument("--service-root", default="/api/data/v9.2", help="the OData service's path (F&O: /data)")
    ap.add_argument("--page-size", type=int, default=5000)
    ap.add_argument("--write", action="store_true", help="floor (b): also write JSON lines")
    args = ap.parse_args(argv)
    with open(args.info) as fh:
        info = json.load(fh)
    session = requests.Session()
    headers = {
        "Authorization": f"Bearer {token(info)}",
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "Prefer": f"odata.maxpagesize={args.page_size}",
    }
    out = sys.stdout.buffer
    dumps = orjson.dumps
    rows = pages = 0
    reads = []
    for spec in args.table:
        entity_set, cols, orderby = spec.split(":", 2)
        query = urllib.parse.urlencode({"$select": cols, "$orderby": orderby}, safe="$,", quote_via=urllib.parse.quote)
        reads.append(f"{entity_set}?{query}")
    for first in [*reads, *args.query]:
        url: str | None = f"{info['org_url']}{args.service_root}/{first}"
        while url:
            response = session.get(url, headers=headers, verify=info["ca_bundle"], timeout=600)
            response.raise_for_status()
            payload = orjson.loads(response.content)
            records = payload["value"]
            pages += 1
            rows += len(records)
            if args.write:
                for record in records:
                    out.write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            url = payload.get("@odata.nextLink")
    out.flush()
    print(json.dumps({"rows": rows, "pages": pages}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
