"""sekiops: operate Sekiban multi-projection snapshots."""
__version__ = "0.1.0"
