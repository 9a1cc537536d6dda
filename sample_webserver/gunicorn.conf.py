# gunicorn settings for the sample web server; every value can be overridden
# with GUNICORN_CMD_ARGS or the environment variables read below.
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
keepalive = 75  # seconds an idle keep-alive connection (the proxy pools them) stays open
timeout = 60
graceful_timeout = 10
# logs go to stdout/stderr; access log only when ACCESS_LOG=1 (load tests)
errorlog = "-"
accesslog = "-" if os.environ.get("ACCESS_LOG", "0") == "1" else None
loglevel = os.environ.get("LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm"
