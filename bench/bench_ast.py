"""Universal-AST benchmark: parse + conversion vs raw tree-sitter parsing, and rows/s into Parquet.

    python bench/bench_ast.py [--copies 20] [--repeat 3]

Corpus: tokenmill's own Python sources plus one snippet per other language (from the
tests), each repeated `--copies` times into files of a few hundred KB. In one run:

* raw        `parser.parse(bytes)` of every file (tree-sitter only, no Python per node);
* universal  `universal_ast.parse`: the same parse plus the cursor walk that emits every
             node in the universal schema (ids, parents, depth, categories, fields,
             positions) and the per-file names;
* lake       committing all files' `ast_files` + `ast_nodes` rows to a lake (rows/s);
* mlcpd      `mlcpd.export_mlcpd`: the lake's rows back out as MLCPD dataset rows (its
             node filter, keyword categories, JSON), nodes/s.

Printed: MB/s of raw and universal, the conversion cost as a multiple of the raw parse
((universal − raw) / raw; the issue's target is ≤ 2×), Parquet rows/s, export nodes/s,
and per grammar the share of its named node kinds that fall into "other".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def corpus(copies: int) -> list[tuple[bytes, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.code.test_universal_ast import SNIPPETS

    root = Path(__file__).resolve().parents[1] / "tokenmill"
    python = b"\n".join(p.read_bytes() for p in sorted(root.rglob("*.py")))
    files = [(python, "python")]
    files += [((src + "\n") .encode() * 200, lang) for lang, src in SNIPPETS.items() if lang != "python"]
    return [(data * copies if lang == "python" else data * max(1, copies // 4), lang) for data, lang in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from tokenmill.code.tables import file_row, files_table, nodes_table, source_file_id
    from tokenmill.code.mlcpd import export_mlcpd
    from tokenmill.code.universal_ast import GRAMMARS, grammar, other_share, parse
    from tokenmill.storage.lake import Lake

    files = corpus(args.copies)
    mb = sum(len(d) for d, _ in files) / 1e6
    for _, lang in files:
        grammar(lang)  # grammars loaded and category tables built outside the timing
    best = {"raw": float("inf"), "universal": float("inf")}
    parsed = []
    for i in range(args.repeat):
        for side in (("raw", "universal") if i % 2 == 0 else ("universal", "raw")):
            t0 = time.perf_counter()
            if side == "raw":
                for data, lang in files:
                    grammar(lang).parser.parse(data)
            else:
                parsed = [parse(data, lang) for data, lang in files]
            best[side] = min(best[side], time.perf_counter() - t0)
    nodes = sum(len(p.nodes["node_id"]) for p in parsed)
    ids = [source_file_id(f"f{i}", p.source_hash) for i, p in enumerate(parsed)]
    t0 = time.perf_counter()
    ft = files_table([file_row(fid, p, path=f"f{i}") for i, (fid, p) in enumerate(zip(ids, parsed))])
    nt = nodes_table(list(zip(ids, parsed)))
    lake = Lake(tempfile.mkdtemp(prefix="bench-ast-"))
    lake.commit("ast_nodes", "b", nt)
    lake.commit("ast_files", "b", ft)
    t_lake = time.perf_counter() - t0
    t0 = time.perf_counter()
    export_mlcpd(lake, "b", tempfile.mkdtemp(prefix="bench-mlcpd-"))
    t_export = time.perf_counter() - t0

    console = Console(width=120)
    table = Table(title=f"universal AST: {len(files)} files, {mb:.1f} MB, {nodes:,} nodes, 10 languages")
    for col in ("step", "seconds (best)", "MB/s", "nodes/s"):
        table.add_column(col, justify="right")
    for side in ("raw", "universal"):
        table.add_row(f"{side} parse", f"{best[side]:.3f}", f"{mb / best[side]:.2f}", f"{nodes / best[side]:,.0f}")
    table.add_row("rows → Parquet", f"{t_lake:.3f}", f"{mb / t_lake:.2f}", f"{(nt.num_rows + ft.num_rows) / t_lake:,.0f} rows/s")
    table.add_row("lake → MLCPD rows", f"{t_export:.3f}", f"{mb / t_export:.2f}", f"{nodes / t_export:,.0f}")
    console.print(table)
    shares = Table(title='named node kinds per grammar that fall into "other"')
    for col in ("language", "named kinds", "other", "share"):
        shares.add_column(col, justify="right")
    for lang in GRAMMARS:
        n, o = other_share(lang)
        shares.add_row(lang, str(n), str(o), f"{o / n:.1%}")
    console.print(shares)
    conversion = (best["universal"] - best["raw"]) / best["raw"]
    console.print(f"conversion cost: [bold]{conversion:.1f}×[/] the raw parse (target ≤ 2×)")


if __name__ == "__main__":
    main()
