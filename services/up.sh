#!/usr/bin/env bash
# Bring up the real PostgreSQL and OpenSearch that demo, tests and benchmarks use; idempotent.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
t0=$SECONDS
bash "$here/postgres.sh" up
bash "$here/opensearch.sh" up
echo "services: ready in $((SECONDS - t0))s"
echo "  FLUSSO_PG_DSN=postgresql://postgres:***@127.0.0.1:${FLUSSO_PG_PORT:-5432}/postgres (password: postgres)"
echo "  OPENSEARCH_URL=http://127.0.0.1:${OPENSEARCH_PORT:-9200}"
