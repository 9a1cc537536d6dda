# gunicorn settings for the proxy; overridable with GUNICORN_CMD_ARGS.
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("PROXY_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("PROXY_THREADS", "16"))
keepalive = 30
timeout = 120
graceful_timeout = 10
errorlog = "-"
accesslog = "-" if os.environ.get("ACCESS_LOG", "0") == "1" else None
loglevel = os.environ.get("LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm"
