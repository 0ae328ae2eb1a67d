"""psd, the Point Space Daemon: per-user activity metrics summed over any range of seconds."""

__version__ = "0.1.0"
