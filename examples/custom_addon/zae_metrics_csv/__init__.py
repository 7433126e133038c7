"""zae-metrics-csv: epoch summaries as a CSV file, a complete example of a third-party zae-engine add-on."""

from zae_metrics_csv.addon import MetricsCSVAddon, MetricsCSVConfig

__all__ = ["MetricsCSVAddon", "MetricsCSVConfig"]
