"""labshared.console.render_table: the Markdown form's alignment row, per column."""

from labshared.console import render_table


def test_markdown_alignment_first_column_then_the_rest():
    table = render_table(["model", "R@1", "R@5"], [["base", "1.00", "2.00"]], markdown=True)
    assert table.splitlines() == [
        "| model | R@1 | R@5 |",
        "| :--- | ---: | ---: |",
        "| base | 1.00 | 2.00 |",
    ]


def test_markdown_alignment_per_column_with_the_last_letter_repeated():
    rows = [["digit (3)", "base", "0.00", 5]]
    table = render_table(["queries", "model", "R@1", "n"], rows, markdown=True, align="llr")
    assert table.splitlines()[1] == "| :--- | :--- | ---: | ---: |"
    assert table.splitlines()[2] == "| digit (3) | base | 0.00 | 5 |"
    assert render_table(["a", "b"], [["x", "y"]], markdown=True, align="r").splitlines()[1] == (
        "| ---: | ---: |"
    )


def test_terminal_table_keeps_the_cells_and_title():
    text = render_table(["part", "R@1"], [["toy", "12.50"]], title="toy val")
    assert text.splitlines()[0].strip() == "toy val"
    assert "toy" in text and "12.50" in text and "|" not in text


def test_floats_are_rounded_by_one_rule_in_every_table():
    """Issue 15 item 4: no table shows `92.0999984741211` (a float32 turned float)."""
    import numpy as np
    import torch

    from labshared.console import format_cell

    cells = [92.0999984741211, np.float32(92.1), torch.tensor(0.07431), 12345.678, 0.0,
             float("nan"), 3, "x"]  # fmt: skip
    assert [format_cell(c) for c in cells] == [
        "92.10", "92.10", "0.0743", "12,345.7", "0.00", "nan", "3", "x"
    ]  # fmt: skip
    table = render_table(["m", "v"], [["a", np.float32(92.1)]], markdown=True)
    assert table.splitlines()[-1] == "| a | 92.10 |"
