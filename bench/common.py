"""What the benchmarks share: a throw-away PostgreSQL database migrated from scratch, Django set
up on it, the machine's description, medians and a plain-text table.

Each benchmark owns its database (dropped and recreated on every start) so that it never
touches the development or test databases and two benchmarks can run at once.
"""

import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def setup_django(db_name: str, *, admin_url: str = ADMIN_URL, keep: bool = False) -> str:
    """Recreate `db_name` (unless `keep` and it exists), point Django at it and migrate."""
    import psycopg

    base = admin_url.rsplit("/", 1)[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchone()
        if exists and not keep:
            conn.execute(f'DROP DATABASE "{db_name}" WITH (FORCE)')
        if not exists or not keep:
            conn.execute(f'CREATE DATABASE "{db_name}"')
    url = f"{base}/{db_name}"
    os.environ["DATABASE_URL"] = url
    os.environ["DEBUG"] = "0"  # no query log: it would be part of what is measured
    os.environ["CONN_MAX_AGE"] = "600"  # one persistent connection, as a worker has
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "credits_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
        cur.execute("SHOW shared_buffers")
        sb = cur.fetchone()[0]
        cur.execute("SHOW synchronous_commit")
        sc = cur.fetchone()[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"PostgreSQL {pg} (shared_buffers {sb}, synchronous_commit {sc}), load avg {load}"
    )


def median(values) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        out.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
