"""Run the tool from Python (a notebook, a script) and read its verdict as typed data.

    python examples/python_api.py [CONFIG] [RUN_DIR]

No Prefect and no server: `augment.run` runs the stage graph in this process and returns the
benchmark's Summary (augment/summary.py). Re-running resumes, like `augment run`.
"""

import sys

from augment import load_config, run

config = sys.argv[1] if len(sys.argv) > 1 else "configs/smoke.yaml"
run_dir = sys.argv[2] if len(sys.argv) > 2 else "runs/python-api"

cfg = load_config(config, ["benchmark.seeds=3"])  # any --set override works here too
summary = run(cfg, run_dir=run_dir)

rec = summary.recommendation
print(f"recommended arm: {rec.arm} (chosen on val; synthetic data helps: {rec.synthetic_helps_on_val})")
for arm, result in summary.arms.items():
    stat = result.test.metrics[summary.primary_metric]
    print(f"  {arm:32s} test {summary.primary_metric} {stat.mean:.3f} [{stat.ci_low:.3f}, {stat.ci_high:.3f}]")
gain = rec.test_gain_over_real
print(f"gain over real images alone: {100 * gain.gain:+.1f} points, p={gain.p_value:.3f}, "
      f"per seed {[round(100 * g, 1) for g in gain.per_seed]}")
print(f"report: {run_dir}/report/report.html")
