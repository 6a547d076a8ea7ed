"""gateway.agent.link.WorkNews: what the relay loop hears about work, for the agent's
work loop (an idle station holds its relay exchange, and no work long poll)."""

from __future__ import annotations

import threading

from gateway.agent.link import WorkNews


def test_watched_from_the_start_and_told_of_work():
    news = WorkNews()
    assert news.seen == "" and news.supported
    assert news.next(0) == "idle"  # the relay's first exchange looks in the database
    news.heard({"requests": [], "work": False, "work_seen": "e:1"})
    assert news.seen == "e:1" and news.next(0) == "idle"
    news.heard({"requests": [], "work": True, "work_seen": "e:2"})
    assert news.seen == "e:2"
    assert news.next(0) == "work"
    assert news.next(0) == "idle"  # told once


def test_a_waiting_work_loop_is_woken_by_the_news():
    news = WorkNews()
    out = []
    loop = threading.Thread(target=lambda: out.append(news.next(60)))
    loop.start()
    news.heard({"work": True, "work_seen": "e:3"})
    loop.join(30)
    assert out == ["work"]


def test_a_lost_relay_link_hands_the_watching_back_to_the_work_loop():
    news = WorkNews()
    news.lost()
    assert news.next(0) == "lost"  # once: the agent registers again
    assert news.next(0) == "poll"  # then long-polls itself
    news.lost()
    assert news.next(0) == "poll"  # not watched: no second "lost"
    news.heard({"work": False, "work_seen": "e:4"})  # the link is back
    assert news.next(0) == "idle"
    # Work told before the link went down is still fetched first.
    news.heard({"work": True, "work_seen": "e:5"})
    news.lost()
    assert news.next(0) == "work"
    assert news.next(0) == "lost"


def test_an_answer_without_work_news_changes_nothing_and_an_old_coordinator_stops_it():
    news = WorkNews()
    news.heard({"accepted": [], "unknown": [], "requests": []})
    assert news.seen == "" and news.next(0) == "idle"
    news.unsupported()
    assert news.supported is False
    assert news.next(0) == "lost" and news.next(0) == "poll"


def test_again_and_close():
    news = WorkNews()
    news.again()  # the last poll was a full batch
    assert news.next(0) == "work"
    out = []
    loop = threading.Thread(target=lambda: out.append(news.next(60)))
    loop.start()
    news.close()  # the agent stops: the loop is not kept waiting
    loop.join(30)
    assert out == ["idle"]


def test_a_stopped_relay_loop_hands_the_watching_back():
    from gateway.agent.config import Policy
    from gateway.agent.relay import RelayAgent

    news = WorkNews()
    relay = RelayAgent("http://127.0.0.1:9/api", "k", "http://127.0.0.1:9", Policy(), news=news)
    relay.stop(0)  # never started: nothing to join
    assert news.next(0) == "lost" and news.next(0) == "poll"


def test_a_coordinator_that_refuses_the_field_gets_exchanges_without_it():
    """An older coordinator answers 400 naming `work` (unknown field): the relay loop
    sends its exchanges without it from then on, and the work loop long-polls."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from gateway.agent.config import Policy
    from gateway.agent.relay import RelayAgent

    bodies: list[dict] = []

    class OldCoordinator(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            if "work" in body:
                status, out = 400, {"message": "Bad input.", "errors": {"work": ["Unknown."]}}
            else:
                status, out = 200, {"accepted": [], "unknown": [], "requests": []}
                threading.Event().wait(0.05)  # a short poll
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), OldCoordinator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    news = WorkNews()
    url = f"http://127.0.0.1:{server.server_port}/api"
    relay = RelayAgent(url, "k", "http://127.0.0.1:9", Policy(), poll_wait=1, news=news)
    relay.start()
    try:
        for _ in range(1000):
            if sum("work" not in b for b in bodies) >= 3:
                break
            threading.Event().wait(0.01)
        assert news.supported is False
        assert news.next(0) == "lost" and news.next(0) == "poll"
        assert "work" in bodies[0]
        # At most each first poll (two pollers) carried it; the others never.
        assert sum("work" in b for b in bodies) <= 2
        assert sum("work" not in b for b in bodies) >= 3
    finally:
        relay.stop(1)
        server.shutdown()
