"""A realistic synthetic event stream with known ground truth, for demos, tests and benchmarks.

Customers belong to latent segments that set how often they visit, how often a visit turns
into a purchase, how much they spend and how social they are. Activity follows weekly and
yearly seasonality; every customer has a churn time drawn from their segment's hazard,
after which they stop buying (and mostly stop visiting). Everything is seeded.

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
    ) -> None:
        self.customers = customers
        self.days = days
        self.seed = seed
        self.start = start.timestamp()
        rng = np.random.default_rng(seed)
        shares = np.array([s.share for s in SEGMENTS])
        self.segment_of = rng.choice(len(SEGMENTS), size=customers, p=shares / shares.sum())
        self.signup_day = rng.integers(0, max(days // 2, 1), size=customers)
        hazards = np.array([SEGMENTS[s].churn_hazard_per_day for s in self.segment_of])
        self.churn_day = self.signup_day + rng.exponential(1.0 / hazards)
        self._rng = rng

    def customer_id(self, index: int | np.integer) -> str:
        return f"sim-{self.seed}-{index:06d}"

    def ground_truth(self) -> dict[str, dict[str, Any]]:
        """Per customer: latent segment, signup and churn times (epoch seconds)."""
        return {
            self.customer_id(i): {
                "segment": SEGMENTS[s].name,
                "signup_at": self.start + float(self.signup_day[i]) * DAY,
                "churn_at": self.start + float(self.churn_day[i]) * DAY,
            }
            for i, s in enumerate(self.segment_of)
        }

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
            day_events.sort(key=lambda e: e["ts"])
            for event in day_events:
                counter += 1
                event["event_id"] = f"sim-{self.seed}-{counter}"
                yield event
