"""Gate: the tiny CLIP sees the digit on held-out digit instances (issue 9, item 1/5).

The figures are `python -m labshared.tinyclip --report`'s, on 600 toy test renders whose
MNIST digits were never seen in fitting. Thresholds: the gate's zero-shot digit >= 0.85
(issue 9's gate), plus the target of the fit itself: colour and background >= 0.98 and
text->image attribute-triple R@1 >= 0.75.
"""

import json

import pytest

from labshared.tinyclip.fit import FitConfig, default_fit
from labshared.tinyclip.report import report


@pytest.mark.effects
def test_tiny_clip_sees_digit_colour_and_background():
    assert default_fit() == FitConfig()
    figures = report()
    print("\ntiny CLIP:", json.dumps(figures, indent=1))
    assert figures["n"] >= 500
    assert figures["zeroshot_digit"] >= 0.85, figures
    assert figures["zeroshot_colour"] >= 0.98 and figures["zeroshot_background"] >= 0.98
    assert figures["t2i_r1"] >= 0.75, figures
