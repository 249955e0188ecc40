"""Console sessions under every interleaving of logins, requests, reloads that add, remove or
re-scope tokens, the clock moving, log outs and restarts (a Hypothesis state machine).

After every step, for every session ever handed out, the promise of daemon/ui/sessions.py:
a session is honoured only while it has not expired, was not ended, the daemon has not
restarted since, and its token is configured at that moment with a scope that may read the
console; its scope is always the token's scope of the moment. A session refused once stays
refused, even if its token comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pydantic import SecretStr

from daemon.api.auth import GRANTS
from daemon.config.settings import ApiToken, Scope
from daemon.ui.sessions import Sessions

TTL = 600.0
# The token values a config may hold: a reload picks some of them, each with a scope.
VALUES = ("alpha-0123456789abcdef", "bravo-0123456789abcdef", "charlie-0123456789abcdef")
SCOPES: tuple[Scope, ...] = ("read", "write", "intake")


@dataclass
class Handed:
    """A session the model handed out, and what it knows of it."""

    id: str
    value: str | None  # its token's value; None: logged in while the API was open
    expires_at: float
    dead: bool = False


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sessions = Sessions()
        self.now = 1_000.0
        self.tokens: list[ApiToken] = [
            ApiToken(name="a", token=SecretStr(VALUES[0]), scope="write")
        ]
        self.handed: list[Handed] = []

    def scope_of(self, value: str | None) -> Scope | None:
        if value is None:
            return None if self.tokens else "write"
        found = [t.scope for t in self.tokens if t.token.get_secret_value() == value]
        return found[0] if found else None

    @rule(which=st.integers(0, len(VALUES) - 1))
    def log_in(self, which: int) -> None:
        """As the login form does: a configured token that may read gets a session."""
        value = VALUES[which]
        token = next((t for t in self.tokens if t.token.get_secret_value() == value), None)
        if token is None or "read" not in GRANTS[token.scope]:
            return
        session = self.sessions.create(token, now=self.now, ttl=TTL)
        self.handed.append(Handed(session.id, value, self.now + TTL))

    @precondition(lambda self: not self.tokens)
    @rule()
    def open_the_console(self) -> None:
        session = self.sessions.create(None, now=self.now, ttl=TTL)
        self.handed.append(Handed(session.id, None, self.now + TTL))

    @rule(which=st.integers(0, len(VALUES) - 1), scope=st.sampled_from((*SCOPES, None)))
    def reload(self, which: int, scope: Scope | None) -> None:
        """A reload that adds a token, removes it (None) or changes its scope."""
        value = VALUES[which]
        kept = [t for t in self.tokens if t.token.get_secret_value() != value]
        added = [ApiToken(name=f"t{which}", token=SecretStr(value), scope=scope)] if scope else []
        self.tokens = kept + added

    @rule(seconds=st.sampled_from([1.0, 60.0, TTL / 2, TTL]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: bool(self.handed))
    @rule(data=st.data())
    def log_out(self, data: st.DataObject) -> None:
        handed = data.draw(st.sampled_from(self.handed))
        self.sessions.end(handed.id)
        handed.dead = True

    @rule()
    def restart(self) -> None:
        self.sessions = Sessions()
        for handed in self.handed:
            handed.dead = True

    @invariant()
    def every_session_is_honoured_only_as_promised(self) -> None:
        for handed in self.handed:
            scope = self.scope_of(handed.value)
            alive = (
                not handed.dead
                and self.now < handed.expires_at
                and scope is not None
                and "read" in GRANTS[scope]
            )
            got = self.sessions.get(handed.id, self.tokens, now=self.now)
            assert (got is not None) == alive, (handed, scope, self.tokens)
            if got is None:
                handed.dead = True  # refused once, refused for good
            else:
                assert got.scope == scope


TestSessions = SessionMachine.TestCase
TestSessions.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,  # the same examples every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_session_whose_token_a_reload_made_intake_ends() -> None:
    """What the machine found: a `write` token re-scoped to `intake` kept reading the console."""
    machine = SessionMachine()
    machine.log_in(0)
    machine.reload(0, "intake")
    machine.every_session_is_honoured_only_as_promised()
    assert machine.handed[0].dead
