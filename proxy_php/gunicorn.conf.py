# gunicorn settings for the proxy; overridable with GUNICORN_CMD_ARGS.
# One asyncio worker (aiohttp) serves every connection: the proxy
# only relays, so a second process would add context switches, not capacity,
# on a small machine (PROXY_WORKERS raises it).
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("PROXY_WORKERS", "1"))
worker_class = "aiohttp.GunicornWebWorker"
keepalive = 30  # seconds an idle client connection stays open
timeout = 120
graceful_timeout = 10
errorlog = "-"
accesslog = "-" if os.environ.get("ACCESS_LOG", "0") == "1" else None
loglevel = os.environ.get("LOG_LEVEL", "info")
worker_tmp_dir = "/dev/shm"
