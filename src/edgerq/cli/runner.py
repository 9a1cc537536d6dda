"""Running a daemon: the event loop, signals (SIGHUP reloads, SIGTERM drains, a
second signal stops at once) and the ready line on stdout."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

from edgerq.config.model import ConsumerConfig, ProviderConfig
from edgerq.errors import ConfigError
from edgerq.runtime.daemon import Daemon
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider

log = logging.getLogger("edgerq")


def install_uvloop() -> str:
    """Run on uvloop where it is installed; returns the loop's name for the start line."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def make_daemon(config: ConsumerConfig | ProviderConfig) -> Daemon:
    if isinstance(config, ConsumerConfig):
        return ServiceConsumer(config)
    return ServiceProvider(config)


async def run_daemon(config: ConsumerConfig | ProviderConfig) -> int:
    """Start the daemon for ``config`` and serve until a signal stops it; the exit code."""
    daemon = make_daemon(config)
    loop = asyncio.get_running_loop()
    stop, now = asyncio.Event(), asyncio.Event()

    def on_stop_signal() -> None:
        if stop.is_set():
            now.set()  # a second signal: no more waiting
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal)
    try:
        await daemon.start()
    except OSError as exc:
        log.error("%s", exc.strerror or exc)
        return 1
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    announce_ready(daemon)
    reloads = Reloader(daemon)
    loop.add_signal_handler(signal.SIGHUP, reloads.request)
    await stop.wait()
    loop.remove_signal_handler(signal.SIGHUP)
    await reloads.finish()
    grace = daemon.config.shutdown_grace
    if grace > 0:
        log.info("stopping: draining for up to %g s (signal again to stop at once)", grace)
        drain = loop.create_task(daemon.drain(grace))
        cut_short = loop.create_task(now.wait())
        await asyncio.wait([drain, cut_short], return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.warning("second signal: stopping now")
        drain.cancel()
        cut_short.cancel()
        await asyncio.gather(drain, cut_short, return_exceptions=True)
    log.info("stopping: closing listeners, pipes and open streams")
    await daemon.stop()
    log.info("stopped")
    return 0


READY_PREFIX = "EDGERQ_READY "


def announce_ready(daemon: Daemon) -> None:
    """One line on stdout, ``EDGERQ_READY {json}``, once every port is bound (again
    after each reload): the ports it bound, for whoever started it (a configured
    port 0 is any free one). Logs go to stderr, so stdout carries only these lines."""
    line = READY_PREFIX + json.dumps(daemon.bound(), sort_keys=True)
    try:
        print(line, flush=True)
    except (OSError, ValueError, AttributeError) as exc:  # stdout closed, or none at all
        log.debug("ready line not written (%s): %s", exc, line)


class Reloader:
    """SIGHUP: re-read the daemon's config file and apply it, one reload at a time.
    An invalid file is refused with its error and the running config stays."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # apply the newest file once this reload is done
            return
        self._task = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            path = self.daemon.config.path
            log.info("SIGHUP: reloading %s", path)
            try:
                await self.daemon.reload_file()
                announce_ready(self.daemon)
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
            except OSError as exc:
                log.error(
                    "reload refused, the running configuration stays: %s", exc.strerror or exc
                )
            except Exception:
                log.exception("reload failed; the running configuration stays")
            if not self._again:
                return

    async def finish(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
