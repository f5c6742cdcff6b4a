"""A realistic synthetic event stream with known ground truth, for demos, tests and benchmarks.

Customers belong to latent segments that set how often they visit, how often a visit turns
into a purchase, how much they spend and how social they are. Activity follows weekly and
yearly seasonality; every customer has a churn time drawn from their segment's hazard,
after which they stop buying (and mostly stop visiting). Everything is seeded.

With ``identities=True`` a person is named as each channel knows them (``schemas.identifiers``):
a device's cookie (``anonymous_id``) on the web and in the app, also in the weeks before they
sign up, their account (``customer_id``) when they are logged in, a loyalty card at the till,
a social handle on social platforms. ``identify`` events link them: the account with the
device and the email at sign-up, the card when it is linked to the account, the handle when
the social account is connected; some pairs of people share a family tablet and log in on it.
The ground truth then lists each person's identifiers and events.

Examples
--------
>>> sim = Simulation(customers=50, days=30, seed=1)
>>> events = list(sim.events())
>>> sorted({e["type"] for e in events})
['customer_profile', 'purchase', 'social_interaction', 'visit']
>>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
True
>>> list(Simulation(customers=50, days=30, seed=1).events()) == events
True
>>> named = Simulation(customers=50, days=30, seed=1, identities=True)
>>> as_named = list(named.events())
>>> sorted({kind for e in as_named for kind in e.get("identifiers", {})})
['anonymous_id', 'email', 'loyalty_card', 'social_handle']
>>> sum(len(person["event_ids"]) for person in named.ground_truth().values()) == len(as_named)
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas.identifiers import identifier, normalized

DAY = 86_400.0


@dataclass(frozen=True)
class LatentSegment:
    """How customers of one latent segment behave (rates per day)."""

    name: str
    share: float
    visits_per_day: float
    conversion: float
    order_value_mean: float
    social_per_day: float
    churn_hazard_per_day: float


SEGMENTS = (
    LatentSegment("vip", 0.10, 0.50, 0.35, 180.0, 0.20, 0.001),
    LatentSegment("regular", 0.35, 0.20, 0.25, 60.0, 0.05, 0.003),
    LatentSegment("bargain", 0.25, 0.25, 0.15, 20.0, 0.02, 0.005),
    LatentSegment("occasional", 0.30, 0.04, 0.20, 45.0, 0.01, 0.010),
)
CATEGORIES = ("music", "books", "games", "electronics", "fashion", "home")
REGIONS = {
    "north": ("Hamburg", "Oslo"),
    "south": ("Milan", "Lyon"),
    "east": ("Vienna", "Graz"),
    "west": ("Porto", "Nantes"),
}
ACQUISITION = ("search", "social", "referral", "email", "store")
SOCIAL_ACTIONS = ("like", "like", "like", "comment", "share", "follow", "mention", "review")


class Simulation:
    """Seeded synthetic customers and their events, in event-time order."""

    def __init__(
        self,
        customers: int = 2_000,
        days: int = 365,
        seed: int = 42,
        start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
        identities: bool = False,
    ) -> None:
        self.customers = customers
        self.days = days
        self.seed = seed
        self.start = start.timestamp()
        self.identities = identities
        #: Of a simulation with identities: each person's event ids, as generated.
        self.event_ids: dict[str, list[str]] = {}
        rng = np.random.default_rng(seed)
        shares = np.array([s.share for s in SEGMENTS])
        self.segment_of = rng.choice(len(SEGMENTS), size=customers, p=shares / shares.sum())
        self.signup_day = rng.integers(0, max(days // 2, 1), size=customers)
        hazards = np.array([SEGMENTS[s].churn_hazard_per_day for s in self.segment_of])
        self.churn_day = self.signup_day + rng.exponential(1.0 / hazards)
        self._rng = rng
        if identities:
            self.people = People(customers, seed, self.signup_day)

    def customer_id(self, index: int | np.integer) -> str:
        return f"sim-{self.seed}-{index:06d}"

    def ground_truth(self) -> dict[str, dict[str, Any]]:
        """Per customer: latent segment, signup and churn times (epoch seconds); with
        identities, also their identifiers and the ids of their events generated so far."""
        truth: dict[str, dict[str, Any]] = {
            self.customer_id(i): {
                "segment": SEGMENTS[s].name,
                "signup_at": self.start + float(self.signup_day[i]) * DAY,
                "churn_at": self.start + float(self.churn_day[i]) * DAY,
            }
            for i, s in enumerate(self.segment_of)
        }
        if self.identities:
            for i, person in enumerate(truth):
                person_truth = truth[person]
                person_truth["identifiers"] = self.people.identifiers(i, person)
                person_truth["event_ids"] = self.event_ids.get(person, [])
        return truth

    def save_ground_truth(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.ground_truth(), indent=0), encoding="utf-8")

    def _season(self, day: int) -> float:
        ts = self.start + day * DAY
        date = datetime.fromtimestamp(ts, tz=UTC)
        weekly = 1.3 if date.weekday() >= 5 else 0.9
        yearly = 1.0 + 0.35 * math.exp(-(((date.timetuple().tm_yday - 340) / 20.0) ** 2))
        return weekly * yearly

    def events(self) -> Iterator[dict[str, Any]]:
        """All events, ordered by event time."""
        rng = self._rng
        seg = [SEGMENTS[s] for s in self.segment_of]
        visit_rate = np.array([s.visits_per_day for s in seg])
        social_rate = np.array([s.social_per_day for s in seg])
        counter = 0
        for day in range(self.days):
            season = self._season(day)
            joined = self.signup_day <= day
            alive = joined & (self.churn_day > day)
            # After churn, a trickle of visits and no purchases.
            rate = np.where(alive, visit_rate * season, np.where(joined, visit_rate * 0.05, 0.0))
            visits = rng.poisson(rate)
            socials = rng.poisson(np.where(alive, social_rate, 0.0))
            day_events: list[dict[str, Any]] = []
            for i in np.flatnonzero(self.signup_day == day):
                region = rng.choice(list(REGIONS))
                day_events.append(
                    {
                        "type": "customer_profile",
                        "customer_id": self.customer_id(i),
                        "ts": self.start + day * DAY + 60.0,
                        "channel": "web",
                        "region": str(region),
                        "city": str(rng.choice(REGIONS[region])),
                        "age_band": str(rng.choice(["18-24", "25-34", "35-44", "45-54", "55+"])),
                        "gender": str(rng.choice(["f", "m", "x"])),
                        "signup_at": self.start + day * DAY + 60.0,
                        "acquisition_channel": str(rng.choice(ACQUISITION)),
                    }
                )
            for i in np.flatnonzero(visits):
                cid, s = self.customer_id(i), seg[i]
                for _ in range(int(visits[i])):
                    ts = self.start + day * DAY + float(rng.uniform(120, DAY - 3_600))
                    session = f"{cid}-{day}-{int(ts)}"
                    device = str(rng.choice(["mobile", "desktop", "tablet"]))
                    day_events.append(
                        {
                            "type": "visit",
                            "customer_id": cid,
                            "ts": ts,
                            "channel": "app" if device == "mobile" else "web",
                            "session_id": session,
                            "page": "/home",
                            "duration_s": float(rng.gamma(2.0, 90.0)),
                            "utm_source": str(rng.choice(["google", "newsletter", "instagram", "direct"])),
                            "device": device,
                        }
                    )
                    if alive[i] and rng.random() < s.conversion:
                        amount = round(float(rng.lognormal(math.log(s.order_value_mean), 0.5)), 2)
                        category = CATEGORIES[(i + int(rng.integers(0, 2))) % len(CATEGORIES)]
                        quantity = int(rng.integers(1, 4))
                        refund = rng.random() < 0.03
                        day_events.append(
                            {
                                "type": "purchase",
                                "customer_id": cid,
                                "ts": ts + float(rng.uniform(60, 1_800)),
                                "channel": str(rng.choice(["web", "app", "pos"])),
                                "order_id": f"o-{session}",
                                "amount": amount,
                                "currency": "EUR",
                                "kind": "refund" if refund else "purchase",
                                "items": [
                                    {
                                        "sku": f"{category}-{int(rng.integers(0, 50))}",
                                        "category": category,
                                        "quantity": quantity,
                                        "unit_price": round(amount / quantity, 2),
                                    }
                                ],
                            }
                        )
            for i in np.flatnonzero(socials):
                cid = self.customer_id(i)
                for _ in range(int(socials[i])):
                    day_events.append(
                        {
                            "type": "social_interaction",
                            "customer_id": cid,
                            "ts": self.start + day * DAY + float(rng.uniform(0, DAY - 1)),
                            "channel": "social",
                            "platform": str(rng.choice(["instagram", "tiktok", "facebook"])),
                            "action": str(rng.choice(SOCIAL_ACTIONS)),
                            "content_id": f"post-{int(rng.integers(0, 500))}",
                        }
                    )
            if self.identities:
                day_events = self.people.named(day_events, day, self.start + day * DAY, self.customer_id)
            day_events.sort(key=lambda e: e["ts"])
            for event in day_events:
                counter += 1
                event["event_id"] = f"sim-{self.seed}-{counter}"
                if self.identities:
                    self.event_ids.setdefault(event.pop("person"), []).append(event["event_id"])
                yield event


class People:
    """How each channel names the simulated customers, drawn from its own seeded generator (the
    customers' behaviour stays the same with and without identities)."""

    def __init__(self, customers: int, seed: int, signup_day: np.ndarray) -> None:
        rng = self.rng = np.random.default_rng([seed, 17])
        self.seed, self.signup_day = seed, signup_day
        self.devices = rng.integers(1, 3, size=customers)
        self.has_card = rng.random(customers) < 0.5
        self.has_handle = rng.random(customers) < 0.4
        # The day the card is linked to the account, the day the social account is connected.
        self.card_linked = np.where(rng.random(customers) < 0.7, signup_day + rng.exponential(60.0, customers), np.inf)
        self.handle_linked = np.where(
            rng.random(customers) < 0.5, signup_day + rng.exponential(90.0, customers), np.inf
        )
        # Pairs of people (i, i + 1) who share a family tablet.
        self.tablet: dict[int, str] = {}
        for i in np.flatnonzero(rng.random(customers - 1) < 0.04):
            if i not in self.tablet and i + 1 not in self.tablet:
                self.tablet[int(i)] = self.tablet[int(i) + 1] = f"tablet-{seed}-{i}"
        self.anonymous_before = rng.poisson(2.0, customers)  # visits in the 30 days before sign-up

    def device(self, i: int) -> str:
        index = int(self.rng.integers(0, self.devices[i]))
        shared = self.tablet.get(i)
        return shared if shared is not None and self.rng.random() < 0.3 else f"device-{self.seed}-{i}-{index}"

    def identifiers(self, i: int, customer_id: str) -> list[str]:
        """Every identifier of person ``i`` (a shared tablet is listed for both)."""
        names = [customer_id, identifier("email", normalized("email", f"{customer_id}@example.com"))]
        names += [identifier("anonymous_id", f"device-{self.seed}-{i}-{d}") for d in range(self.devices[i])]
        names += [identifier("anonymous_id", self.tablet[i])] if i in self.tablet else []
        names += [identifier("loyalty_card", f"card-{self.seed}-{i}")] if self.has_card[i] else []
        names += [identifier("social_handle", f"@{customer_id}")] if self.has_handle[i] else []
        return names

    def named(self, events: list[dict[str, Any]], day: int, midnight: float, customer_id: Any) -> list[dict[str, Any]]:
        """The day's events with each person named as its channel knows them, and the day's
        anonymous visits before sign-up and identify events added; each marked with its person."""
        rng, out = self.rng, []
        for n in np.flatnonzero((self.signup_day > day) & (self.signup_day <= day + 30)):
            if rng.random() < self.anonymous_before[n] / 30:
                out.append(
                    {
                        "type": "visit",
                        "customer_id": customer_id(n),
                        "ts": midnight + float(rng.uniform(0, DAY - 1)),
                        "channel": "web",
                        "session_id": f"anonymous-{self.seed}-{n}-{day}",
                        "page": "/home",
                    }
                )
        linking = [(i, "signup") for i in np.flatnonzero(self.signup_day == day)]
        linking += [(i, "card") for i in np.flatnonzero(np.floor(self.card_linked) == day) if self.has_card[i]]
        linking += [(i, "handle") for i in np.flatnonzero(np.floor(self.handle_linked) == day) if self.has_handle[i]]
        for n, why in linking:
            cid = customer_id(n)
            ids = {
                "signup": {"anonymous_id": f"device-{self.seed}-{n}-0", "email": f"{cid}@example.com"},
                "card": {"loyalty_card": f"card-{self.seed}-{n}"},
                "handle": {"social_handle": f"@{cid}"},
            }[why]
            out.append(
                {"type": "identify", "customer_id": cid, "ts": midnight + 90.0, "channel": "web", "identifiers": ids}
            )
        index_of = {customer_id(n): n for n in range(len(self.devices))}
        for event in events + out:
            cid = event["customer_id"]
            i = index_of[cid]
            event["person"] = cid
            if event["type"] == "identify" or event["type"] == "customer_profile":
                if event["type"] == "customer_profile":
                    event["identifiers"] = {"email": f"{cid}@example.com"}
                continue
            if event["type"] == "visit":
                device = self.device(i) if self.signup_day[i] <= day else f"device-{self.seed}-{i}-0"
                event["identifiers"] = {"anonymous_id": device}
                if self.signup_day[i] > day or rng.random() < 0.5:  # not logged in
                    del event["customer_id"]
            elif event["type"] == "purchase" and event["channel"] == "pos" and self.has_card[i]:
                event["identifiers"] = {"loyalty_card": f"card-{self.seed}-{i}"}
                del event["customer_id"]
            elif event["type"] == "purchase":
                event["identifiers"] = {"anonymous_id": self.device(i)}
            elif event["type"] == "social_interaction" and self.has_handle[i]:
                event["identifiers"] = {"social_handle": f"@{cid}"}
                del event["customer_id"]
        return events + out
