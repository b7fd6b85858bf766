"""Runs a command with a private PostgreSQL server (pgserver.py) up, its URL in
SECURECONF_TEST_POSTGRES_URL (a role that may create databases): what the Swift storage
contract tests (StorageContractTests) need to run against PostgreSQL as well as SQLite.

    python3 tests/postgres/with_server.py swift test --skip-build
"""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgserver import PgServer  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: with_server.py COMMAND [ARGS...]")
    with PgServer() as pg:
        pg.create_role_and_db("contract", "contract-password", "contract")
        pg.psql('ALTER ROLE "contract" CREATEDB')
        env = dict(os.environ, SECURECONF_TEST_POSTGRES_URL=pg.url("contract", "contract-password", "contract"))
        code = subprocess.call(sys.argv[1:], env=env)
    sys.exit(code)
