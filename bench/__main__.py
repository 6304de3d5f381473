"""`make bench`: each line compares the platform with a plain baseline measured in the
same run on the same machine, as a ratio (absolute times on a shared machine mean little)."""

import subprocess
import sys

for module in (
    "bench.train_bench",
    "bench.dataset_bench",
    "bench.classify_bench",
    "bench.evaluate_bench",
    "bench.scale_bench",
    "bench.load_drill",
    "bench.push_latency",
):
    subprocess.run([sys.executable, "-m", module, *sys.argv[1:]], check=True)
