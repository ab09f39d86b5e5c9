#!/usr/bin/env bash
# Smoke test of the local node started by services/opensearch.sh: checks the version, the
# plugins flusso needs (mapper-extras, analysis-common, painless, reindex) and external
# versioning. Uses a throw-away index; exits non-zero on the first failure.
set -euo pipefail
U="http://127.0.0.1:${OPENSEARCH_PORT:-9200}"
IDX="flusso-smoke-$$"
J='content-type: application/json'
fail() { echo "smoke: FAIL: $*" >&2; curl -s -XDELETE "$U/$IDX" >/dev/null || true; exit 1; }
py() { python3 -c "import sys,json; d=json.load(sys.stdin); $1"; }

curl -sf "$U" | py 'assert d["version"]["number"].startswith("2.19."), d; print("version", d["version"]["number"])' || fail version
curl -sf -XPUT "$U/$IDX" -H "$J" -d '{
  "settings": {"number_of_shards": 1, "number_of_replicas": 0,
    "analysis": {"analyzer": {"folded": {"tokenizer": "standard", "filter": ["lowercase", "asciifolding"]}}}},
  "mappings": {"properties": {
    "title": {"type": "search_as_you_type"},
    "body": {"type": "text", "analyzer": "standard"},
    "name": {"type": "text", "analyzer": "folded"},
    "n": {"type": "integer"}, "created": {"type": "date"}}}}' >/dev/null || fail "create index"
printf '%s\n' \
  '{"index":{"_id":"1"}}' '{"title":"quick brown fox","body":"The Quick brown fox","name":"Café","n":1,"created":"2024-01-01"}' \
  '{"index":{"_id":"2"}}' '{"title":"quick red panda","body":"A red panda","name":"Zoë","n":2,"created":"2024-02-01T10:00:00Z"}' \
  '{"index":{"_id":"3"}}' '{"title":"lazy dog","body":"lazy dogs bark","name":"Dog","n":3}' |
  curl -sf -XPOST "$U/$IDX/_bulk?refresh=true" -H 'content-type: application/x-ndjson' --data-binary @- |
  py 'assert not d["errors"], d' || fail bulk
curl -sf "$U/$IDX/_search" -H "$J" -d '{"query":{"multi_match":{"query":"qui","type":"bool_prefix","fields":["title","title._2gram","title._3gram"]}}}' |
  py 'ids=sorted(h["_id"] for h in d["hits"]["hits"]); assert ids==["1","2"], ids' || fail search_as_you_type
curl -sf "$U/$IDX/_search" -H "$J" -d '{"query":{"match":{"name":"cafe"}}}' |
  py 'assert [h["_id"] for h in d["hits"]["hits"]]==["1"], d' || fail "asciifolding analyzer"
curl -sf -XPOST "$U/$IDX/_update_by_query?refresh=true" -H "$J" -d '{"query":{"range":{"n":{"gte":2}}},"script":{"lang":"painless","source":"ctx._source.n += params.d","params":{"d":10}}}' |
  py 'assert d["updated"]==2, d' || fail update_by_query
curl -sf "$U/$IDX/_search" -H "$J" -d '{"query":{"script":{"script":{"source":"doc[\"n\"].value > 10"}}}}' |
  py 'assert sorted(h["_id"] for h in d["hits"]["hits"])==["2","3"], d' || fail "script query"
curl -sf -XPUT "$U/$IDX/_doc/9?version=5&version_type=external_gte" -H "$J" -d '{"n":5}' >/dev/null || fail "external_gte write"
curl -sf -XPUT "$U/$IDX/_doc/9?version=5&version_type=external_gte" -H "$J" -d '{"n":5}' >/dev/null || fail "external_gte same version"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPUT "$U/$IDX/_doc/9?version=4&version_type=external_gte" -H "$J" -d '{"n":4}')
[[ "$code" == 409 ]] || fail "older external version should conflict, got $code"
curl -sf -XDELETE "$U/$IDX" >/dev/null || fail "delete index"
echo "smoke: ok"
