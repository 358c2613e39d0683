"""The README's performance table is the one the stored benchmark run gives (``python -m bench.readme_table``)."""

from __future__ import annotations

from bench import readme_table


def test_the_readme_table_is_rendered_from_the_stored_run() -> None:
    assert readme_table.main(["--check"]) == 0


def test_the_rendered_table_names_its_tree_and_command() -> None:
    run = readme_table.json.loads(readme_table.RUN.read_text())
    table = readme_table.render(run)
    assert f"tree {run['tree']}" in table and "python -m bench.instructions" in table
    assert table.count("\n| ") == 4  # after the header: four workloads
