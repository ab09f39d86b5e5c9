"""The one rendering of key values into document ids: the pure rules, and the SQL against a real
PostgreSQL whose session defaults are not the ones flusso pins."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from flusso_engine import keys
from flusso_engine.catalog import Catalog, Column, Table
from flusso_engine.changes import doc_id, split_doc_id
from flusso_engine.config import parse_config
from flusso_engine.documents.routes import index_routes


def column(type_name: str, base: str, category: str = "N", *, element: str | None = None,
           deterministic: bool = True, name: str = "id") -> Column:
    return Column(name=name, type_name=type_name, type_oid=0, element_type=element, category=category,
                  not_null=True, base_type=base, collation_deterministic=deterministic)


# --- doc_id --------------------------------------------------------------------------------------


def test_a_null_key_value_never_becomes_the_id_none() -> None:
    with pytest.raises(ValueError, match="NULL"):
        doc_id([None])
    with pytest.raises(ValueError, match="NULL"):
        doc_id(["a", None])
    assert doc_id(["None"]) == "None"  # a real 'None' keeps its id


def test_composite_ids_escape_and_split_back() -> None:
    assert doc_id(["eu ", "a|b\\c"]) == "eu |a\\|b\\\\c"
    assert split_doc_id(doc_id(["eu ", "a|b\\c"]), 2) == ["eu ", "a|b\\c"]


# --- which types make ids -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "base", "category"),
    [("smallint", "int2", "N"), ("bigint", "int8", "N"), ("numeric(6,2)", "numeric", "N"),
     ("character(5)", "bpchar", "S"), ("character varying(20)", "varchar", "S"), ("text", "text", "S"),
     ("uuid", "uuid", "U"), ("boolean", "bool", "B"), ("date", "date", "D"),
     ("timestamp with time zone", "timestamptz", "D"), ("interval", "interval", "T"),
     ("inet", "inet", "I"), ("cidr", "cidr", "I"), ("macaddr", "macaddr", "U"), ("mood", "mood", "E")],
)
def test_supported_key_types_have_no_problem(type_name: str, base: str, category: str) -> None:
    assert keys.key_type_problem(column(type_name, base, category)) is None


@pytest.mark.parametrize(
    ("col", "reason"),
    [
        (column("double precision", "float8"), "approximate"),
        (column("real", "float4"), "approximate"),
        (column("money", "money"), "lc_monetary"),
        (column("bytea", "bytea", "U"), "binary"),
        (column("jsonb", "jsonb", "U"), "JSON document"),
        (column("integer[]", "int4", "N", element="int4"), "array"),
        (column("int4range", "int4range", "R"), "range"),
        (column("point", "point", "G"), "geometric"),
        (column("address", "address", "C"), "composite"),
        (column("positive_int", "positive_int", "N"), "cannot tell"),  # a domain, or an extension's type
    ],
)
def test_other_key_types_are_refused_with_a_reason(col: Column, reason: str) -> None:
    problem = keys.key_type_problem(col)
    assert problem is not None and reason in problem


# --- when a child's value is the root's id as it is ---------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (column("integer", "int4"), column("bigint", "int8"), True),
        (column("character(5)", "bpchar", "S"), column("character(5)", "bpchar", "S"), True),
        (column("character(5)", "bpchar", "S"), column("character varying(5)", "varchar", "S"), False),
        (column("character(5)", "bpchar", "S"), column("character(8)", "bpchar", "S"), False),
        (column("bpchar", "bpchar", "S"), column("bpchar", "bpchar", "S"), False),  # 'ab' = 'ab '
        (column("text", "text", "S"), column("character varying", "varchar", "S"), False),
        (column("text", "text", "S", deterministic=False), column("text", "text", "S", deterministic=False),
         False),  # a case-insensitive collation: 'AB' = 'ab'
        (column("numeric", "numeric"), column("numeric", "numeric"), False),  # 1.5 = 1.50
        (column("numeric(6,2)", "numeric"), column("numeric(6,2)", "numeric"), True),
        (column("interval", "interval", "T"), column("interval", "interval", "T"), False),  # '1 day' = '24:00:00'
        (column("timestamp with time zone", "timestamptz", "D"),
         column("timestamp with time zone", "timestamptz", "D"), True),
        (column("uuid", "uuid", "U"), column("uuid", "uuid", "U"), True),
    ],
)
def test_same_text_only_where_equal_values_print_equally(a: Column, b: Column, same: bool) -> None:
    assert keys.same_text(a, b) is same
    assert keys.same_text(b, a) is same


def _catalog(root_key: Column, child_fk: Column) -> Catalog:
    item = Table("public", "item", {"id": root_key, "title": column("text", "text", "S", name="title")},
                 ["id"], [["id"]], "d")
    part = Table("public", "part", {"id": column("integer", "int4"), "item_id": child_fk}, ["id"], [["id"]], "f")
    return Catalog({"public.item": item, "public.part": part})


def _child_route(root_key: Column, child_fk: Column):
    config = parse_config({
        "source": {"dsn": "postgresql://x@localhost/x", "slot": "s", "publication": "p"},
        "sink": {"type": "stdout"},
        "indexes": {"items": {"table": "item", "key": ["id"], "fields": {"title": "title"}, "relations": {
            "parts": {"table": "part", "type": "one_to_many", "on": {"id": "item_id"}, "fields": {"n": "id"}}}}},
    }, {})
    routes = index_routes("items", config.indexes["items"], _catalog(root_key, child_fk))
    (route,) = [r for r in routes if r.table == "public.part"]
    return route


def test_a_child_of_the_same_key_type_is_its_root_id_without_a_query() -> None:
    route = _child_route(column("bigint", "int8"), column("integer", "int4", name="item_id"))
    assert route.entry.path == () and route.columns == ("item_id",)


def test_a_child_whose_type_prints_differently_goes_through_the_root_for_its_id() -> None:
    route = _child_route(column("character(5)", "bpchar", "S"),
                         column("character varying(5)", "varchar", "S", name="item_id"))
    assert [n.table for n in route.entry.path] == ["public.item"]
    assert route.entry.columns == ("id",)


# --- the session -------------------------------------------------------------------------------


def test_conninfo_pins_the_rendering_settings_after_the_dsns_own_options() -> None:
    info = psycopg.conninfo.conninfo_to_dict(
        keys.conninfo("host=h dbname=d options='-c work_mem=64MB' connect_timeout=3",
                      connect_timeout=10, application_name="flusso")
    )
    assert info["options"].startswith("-c work_mem=64MB -c TimeZone=UTC -c DateStyle=ISO,YMD")
    assert "-c IntervalStyle=postgres" in info["options"]
    assert info["connect_timeout"] == "3" and info["application_name"] == "flusso"


RENDERED = [  # value, type, the text pgoutput sends for it in a pinned session
    ("ab", "char(5)", "ab   "),
    ("true", "boolean", "t"),
    ("10.0.0.1", "inet", "10.0.0.1"),
    ("10.0.0.0/8", "cidr", "10.0.0.0/8"),
    ("2024-05-01 12:00:00+02", "timestamptz", "2024-05-01 10:00:00+00"),
    ("2024-05-01", "date", "2024-05-01"),
    ("1 day 02:00", "interval", "1 day 02:00:00"),
    ("1.50", "numeric", "1.50"),
    ("", "text", ""),
]


@pytest.mark.parametrize("pin", ["options", "set"])
def test_key_text_is_the_output_function_in_a_pinned_session(fresh_db: str, pin: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        database = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'").format(database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET IntervalStyle = 'sql_standard'").format(database))
    dsn = keys.conninfo(fresh_db) if pin == "options" else fresh_db
    with psycopg.connect(dsn, autocommit=True) as conn:
        if pin == "set":
            keys.pin_session(conn)
        values = [sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(t)) for v, t, _ in RENDERED]
        row = conn.execute(sql.SQL("SELECT {}").format(keys.key_text(values))).fetchone()
        assert list(row) == [text for _, _, text in RENDERED]
        (null,) = conn.execute(sql.SQL("SELECT {}").format(keys.key_text([sql.SQL("NULL::int")]))).fetchone()
        assert null is None  # not '' (which a real empty text key has)
