#!/usr/bin/env python3
"""Generates the C contract suite from include/rootstream_db.h.

Every function the header declares gets test cases derived from its parameter list:
  * each required pointer parameter passed as NULL (all other arguments valid) must give
    RSDB_ERR_NULL and a message saying so;
  * each `const char *` parameter passed as invalid UTF-8 must give RSDB_ERR_INVALID_UTF8;
  * each release function (`*_free`, `*_close`, `rsdb_backup_schedule_stop`,
    `rsdb_wal_gap_watch_stop`) must accept NULL;
  * functions without pointer parameters are called once.
A pointer parameter is optional when the header's documentation of the function says it may be
NULL; such parameters get no NULL case. A parameter type the generator does not know stops the
build, so a new C function can never go untested; so does a constructor whose documentation
does not name the function that releases what it hands out.

Usage: gen_c_contract.py HEADER OUTPUT.inc
"""
import re
import sys

# The fixture's handle for each handle type the functions borrow (see test_c_contract.cpp).
HANDLES = {
    "rsdb_config": "cfg_",
    "rsdb_db": "db_",
    "rsdb_redis": "redis_",
    "rsdb_tx": "tx_",
    "rsdb_users": "users_",
    "rsdb_streams": "streams_",
    "rsdb_stream_sessions": "stream_sessions_",
    "rsdb_events": "events_",
    "rsdb_sessions": "sessions_",
    "rsdb_mfa": "mfa_",
    "rsdb_backup": "backup_",
    "rsdb_recovery": "recovery_",
    "rsdb_sync": "sync_",
    "rsdb_snapshots": "snapshots_",
    "rsdb_metrics_client": "metrics_client_",
    "rsdb_metrics_writer": "metrics_writer_",
    "rsdb_metrics_collector": "metrics_collector_",
    "rsdb_metrics_reporter": "metrics_reporter_",
    "rsdb_sentinel": "sentinel_",
    "rsdb_health": "health_",
    "rsdb_replication": "replication_",
    "rsdb_failover": "failover_",
}
# Input structs the functions read: the fixture's valid value of each (see test_c_contract.cpp).
IN_STRUCTS = {
    "rsdb_metrics_point": "&kContractPoint",
    "rsdb_stream_metrics": "&kContractStream",
}
# Output structs the functions fill.
OUT_STRUCTS = {"rsdb_pool_stats", "rsdb_metrics_writer_stats"}
# Handles the fixture only has on a stack with that part (`stack.sh --sentinel`); cases that
# borrow one skip, saying why, when the fixture could not open it.
OPTIONAL_HANDLES = {"rsdb_sentinel": "sentinel_"}
RELEASE_SUFFIXES = ("_free", "_close", "_schedule_stop", "_watch_stop")
# Handles handed out by a function and released by one of their own, not borrowed from the fixture.
STOPPED_HANDLES = ("rsdb_backup_schedule", "rsdb_wal_gap_watch")

# Valid values for string parameters whose content is checked before a later parameter is
# (JSON parsed in place, enumerations). Everything else gets "x".
STRING_VALUES = {
    "kind": '"logical"',
    "cron": '"0 3 * * *"',
    "params_json": '"[]"',
    "events_json": '"[]"',
    "commands_json": '"[]"',
    "args_json": '"[\\"PING\\"]"',
    "values_json": '"[\\"x\\"]"',
    "options_json": '"{}"',
    "strategy": '"lww"',
    "entity_type": '"stream"',
    "payload_json": '"{}"',
    "delta_json": '"{}"',
    "rule_json": '"{\\"name\\":\\"r\\",\\"metric\\":\\"m\\",\\"comparison\\":\\"above\\",\\"threshold\\":1,\\"severity\\":\\"info\\"}"',
    "metrics_json": '"{}"',
    "addr": '"127.0.0.1:0"',
    "interval": '"1m"',
}

SCALARS = {"int", "int64_t", "uint64_t", "double", "size_t", "int32_t", "uint32_t"}
SCALAR_VALUES = {"ttl_ms": "60000", "interval_ms": "60000", "keep_last": "1", "count": "1"}


def strip_comments(text):
    return re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)


def declarations(header):
    """(name, return type, [(type, name)], doc) for every function the header declares."""
    out = []
    # Each declaration with the comment right before it.
    pattern = re.compile(r"(/\*(?:(?!\*/).)*\*/\s*)?^([A-Za-z_][\w \*]*?)\b(rsdb_\w+)\(([^;{]*?)\);",
                         re.S | re.M)
    for m in pattern.finditer(header):
        doc, ret, name, params = m.group(1) or "", m.group(2).strip(), m.group(3), m.group(4)
        if ret.startswith("typedef"):
            continue
        params = " ".join(strip_comments(params).split())
        plist = []
        if params and params != "void":
            for p in params.split(","):
                p = p.strip()
                pm = re.match(r"^(.*?)(\w+)$", p)
                if not pm:
                    sys.exit(f"gen_c_contract: cannot parse parameter '{p}' of {name}")
                plist.append((" ".join(pm.group(1).replace("*", " * ").split()).replace("* *", "**"), pm.group(2)))
        out.append((name, ret, plist, " ".join(doc.split())))
    return out


def optional(doc, pname):
    """Whether the documentation says `pname` (or `*pname`) may be NULL, in one of the forms the
    header uses: "`p` may be NULL", "`p` (may be NULL ...)", "`p` (NULL ...)", "`a`, `b` and `p`
    may be NULL", "With `p` NULL"."""
    name = r"`\*?" + re.escape(pname) + "`"
    if re.search(name + r" (\(may be NULL|\(NULL |may (also )?be NULL)", doc):
        return True
    if re.search(r"With `" + re.escape(pname) + r"` NULL", doc):
        return True
    for m in re.finditer(r"((?:`\*?\w+`,? )+(?:and|or) `\*?\w+`) may (?:both |all |each )?be NULL", doc):
        if re.search(name, m.group(1)):
            return True
    return False


def classify(fname, ptype, pname):
    """(kind, expression for a valid argument, whether the parameter is a pointer)."""
    t = ptype.replace("const ", "").replace("struct ", "").strip()
    if t in SCALARS:
        return "scalar", SCALAR_VALUES.get(pname, "1"), False
    if t == "char *":
        return "string", STRING_VALUES.get(pname, '"x"'), True
    if t == "char **":
        return "out_string", f"{pname}_out.out()", True
    if t.endswith(" **"):
        base = t[:-3]
        if base in HANDLES or base in STOPPED_HANDLES:
            return "out_handle", f"&{pname}_out", True
    if t.endswith(" *"):
        base = t[:-2]
        if base in HANDLES:
            return "handle", f"{HANDLES[base]}.get()", True
        if base in SCALARS:
            return "out_scalar", f"&{pname}_out", True
        if base in OUT_STRUCTS:
            return "out_struct", f"&{pname}_out", True
        if base in IN_STRUCTS and ptype.startswith("const "):
            return "in_struct", IN_STRUCTS[base], True
        if base == "void":
            return "user_data", "nullptr", False
    if t.startswith("rsdb_") and t.endswith("_cb"):
        return "callback", f"contract_{t}", True
    sys.exit(f"gen_c_contract: {fname}: no rule for parameter type '{ptype}' of '{pname}'; "
             "teach gtest/contract/gen_c_contract.py how to make a valid argument of it")


def locals_for(fname, params, skip):
    lines = []
    for ptype, pname in params:
        t = ptype.replace("const ", "").replace("struct ", "").strip()
        if pname != skip and t.endswith(" *") and t[:-2] in OPTIONAL_HANDLES:
            member = OPTIONAL_HANDLES[t[:-2]]
            lines.append(f"    if ({member} == nullptr) GTEST_SKIP() << \"needs a stack started with --sentinel\";")
    for ptype, pname in params:
        if pname == skip:
            continue
        kind, _, _ = classify(fname, ptype, pname)
        t = ptype.replace("const ", "").replace("struct ", "").strip()
        if kind == "out_string":
            lines.append(f"    rsdb_test::capi::OutString {pname}_out;")
        elif kind == "out_handle":
            lines.append(f"    {t[:-3]} *{pname}_out = nullptr;")
        elif kind in ("out_scalar", "out_struct"):
            lines.append(f"    {t[:-2]} {pname}_out{{}};")
    return lines


def call(fname, params, override):
    args = []
    for ptype, pname in params:
        kind, value, _ = classify(fname, ptype, pname)
        args.append(override.get(pname, value))
    return f"{fname}({', '.join(args)})"


def cleanup(fname, params, skip):
    lines = []
    for ptype, pname in params:
        if pname == skip:
            continue
        kind, _, _ = classify(fname, ptype, pname)
        if kind == "out_handle":
            t = ptype.replace("const ", "").replace("struct ", "").strip()[:-3]
            release = release_of(t)
            lines.append(f"    EXPECT_EQ({pname}_out, nullptr) << \"a failed call handed out a handle\";")
            lines.append(f"    {release}({pname}_out);")
    return lines


def release_of(handle_type):
    return {"rsdb_backup_schedule": "rsdb_backup_schedule_stop", "rsdb_wal_gap_watch": "rsdb_wal_gap_watch_stop",
            "rsdb_db": "rsdb_db_close",
            "rsdb_redis": "rsdb_redis_close", "rsdb_sync": "rsdb_sync_close",
            "rsdb_sentinel": "rsdb_sentinel_close", "rsdb_health": "rsdb_health_close",
            "rsdb_replication": "rsdb_replication_close",
            "rsdb_failover": "rsdb_failover_close"}.get(handle_type, handle_type + "_free")


def check_constructor_docs(decls):
    """Every function that hands out a handle names, in its documentation, the function that
    releases it (directly, or through the function it is documented to be "like")."""
    docs = {name: doc for name, _, _, doc in decls}
    missing = []
    for fname, _, params, doc in decls:
        for ptype, pname in params:
            t = ptype.replace("const ", "").replace("struct ", "").strip()
            if not t.endswith(" **") or classify(fname, ptype, pname)[0] != "out_handle":
                continue
            release = release_of(t[:-3])
            like = re.search(r"Like `(rsdb_\w+)`", doc)
            if release not in doc and not (like and release in docs.get(like.group(1), "")):
                missing.append(f"{fname} (hands out {t[:-3]}; its documentation must name {release})")
    if missing:
        sys.exit("gen_c_contract: constructors whose documentation does not name the release "
                 "function:\n  " + "\n  ".join(missing))


def generate(decls):
    check_constructor_docs(decls)
    cases = []
    names = []
    for fname, ret, params, doc in decls:
        names.append(fname)
        is_release = ret == "void" and len(params) == 1 and fname.endswith(RELEASE_SUFFIXES) \
            or fname == "rsdb_string_free"
        if is_release:
            cases.append(f"TEST_F(CContract, {fname}_accepts_null) {{\n    {fname}(nullptr);\n}}\n")
            continue
        pointer_params = [(t, n) for t, n in params if classify(fname, t, n)[2]]
        if not pointer_params:
            cases.append(f"TEST_F(CContract, {fname}_can_be_called) {{\n"
                         f"    contract_call_without_pointers_{fname}();\n}}\n")
            continue
        for ptype, pname in pointer_params:
            kind = classify(fname, ptype, pname)[0]
            if optional(doc, pname):
                cases.append(f"// {fname}: `{pname}` may be NULL (documented), so it has no NULL case.\n")
            else:
                body = locals_for(fname, params, pname)
                body.append(f"    const int rc = {call(fname, params, {pname: 'nullptr'})};")
                body.append("    EXPECT_TRUE(rsdb_test::capi::Fails(rc, RSDB_ERR_NULL, \"NULL\"));")
                body += cleanup(fname, params, pname)
                cases.append(f"TEST_F(CContract, {fname}_{pname}_null_is_rsdb_err_null) {{\n"
                             + "\n".join(body) + "\n}\n")
            if kind == "string":
                body = locals_for(fname, params, None)
                body.append(f"    const int rc = {call(fname, params, {pname: 'kInvalidUtf8'})};")
                body.append("    EXPECT_TRUE(rsdb_test::capi::Fails(rc, RSDB_ERR_INVALID_UTF8, \"UTF-8\"));")
                body += cleanup(fname, params, None)
                cases.append(f"TEST_F(CContract, {fname}_{pname}_invalid_utf8_is_rsdb_err_invalid_utf8) {{\n"
                             + "\n".join(body) + "\n}\n")
    table = "static const char *const kDeclaredFunctions[] = {\n" + \
        "".join(f'    "{n}",\n' for n in names) + "};\n"
    return ("// Generated by gtest/contract/gen_c_contract.py from include/rootstream_db.h; do not edit.\n"
            + table + "\n" + "\n".join(cases))


def main():
    header_path, out_path = sys.argv[1], sys.argv[2]
    with open(header_path, encoding="utf-8") as f:
        header = f.read()
    decls = declarations(header)
    if len(decls) < 10:
        sys.exit(f"gen_c_contract: only {len(decls)} functions found in {header_path}")
    text = generate(decls)
    try:
        with open(out_path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
