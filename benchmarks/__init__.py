"""The pgferry throughput benchmark: ``python -m benchmarks.run --rows N`` (or ``make bench``).

Modules:
    run: the command line; starts the server, runs the rounds, writes the report.
    workload: the standard workload (statements, transform, target table) and result checks.
    measure: runs one method in a fresh subprocess and measures wall time, CPU and memory.
    child: the entry point of that subprocess.
    report: medians, ratios and the Markdown/JSON report.
    methods: the methods compared, (a) to (g).

Nothing here is imported by pgferry itself, and this package imports nothing heavy at import
time: every method runs in its own process, whose start-up cost is part of what is measured.
"""
