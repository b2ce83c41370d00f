"""What operators watch: the deployment-wide exporter (counts read from Redis) and the per-host
latency histograms (prometheus-client multiprocess mode)."""
