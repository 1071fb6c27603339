"""Effect gate for robattr (issue 9): on the MNIST-5k toy, the paper's l2cos must give
gradient maps that survive the Ghorbani top-k attack better than plain training, on the
same digits, with the 95 % bootstrap interval of the paired difference above 0 at each of
two training seeds, and test accuracy >= 0.96 for every model. It runs
`make demo-robattr`'s pipeline (`robattr_cli.demo.run_demo`) with the toy seed of
`make check-effects TOY_SEED=N` and prints the demo's tables, the noise floor (what a
second training seed alone changes) included."""

import pytest

MIN_ACCURACY = 0.96


@pytest.mark.effects
def test_l2cos_beats_none_on_paired_topk_intersection(toy_seed, effects_dir):
    from robattr_cli.demo import (
        COMPARISONS,
        GATE_COMPARISONS,
        GATE_METRIC,
        DemoConfig,
        format_markdown,
        gate_passes,
        run_demo,
    )

    result = run_demo(DemoConfig(toy_seed=toy_seed), effects_dir / "robattr")
    print(f"\nrobattr effect gate, toy seed {toy_seed}:\n{format_markdown(result)}\n")
    labels = {name: label for name, label, *_ in COMPARISONS}
    for name, intervals in result["comparisons"].items():
        ci = intervals[GATE_METRIC]
        print(
            f"top-k attack intersection, {labels[name]}: {ci['mean']:+.4f} "
            f"[{ci['low']:+.4f}, {ci['high']:+.4f}] (n {ci['n']})"
        )
    for model, accuracy in result["accuracy"].items():
        assert accuracy >= MIN_ACCURACY, f"{model}: test accuracy {accuracy:.3f} < {MIN_ACCURACY}"
    for name in GATE_COMPARISONS:
        ci = result["comparisons"][name][GATE_METRIC]
        assert ci["low"] > 0, (
            f"l2cos does not beat none on the paired top-k intersection ({labels[name]}): "
            f"{ci['mean']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}]"
        )
    assert gate_passes(result, MIN_ACCURACY)
