"""msp: can the collector tell the tenants apart? Judged from a verdict and what each sent.

Private Link hides every tenant behind the same PLS NAT IP, and msp's tenants use the same
inner addresses, so the VXLAN VNI each tenant's proxy stamps (``plan.tenant_vni``) is the only
thing that separates them. A verdict is "told apart" when every tenant's VNI arrived with a
whole exchange, no VNI outside the tenants' arrived, and no VNI carries more requests than its
own tenant sent (when that is known): two tenants on one VNI show up as one VNI carrying both
tenants' requests, and fail; fewer is loss, which the verdict's loss figures report.
``separate_tenants`` adds ``tenant_table`` to a verdict; the judge
(``vtaplab.judge.outcome``) turns tenants that can't be told apart into ``not-delivered`` and a
tenant whose VNI carried fewer requests than it sent into ``degraded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def tenant_table(verdict: Mapping[str, Any], vnis: Mapping[str, int],
                 sent: Mapping[str, int] | None = None,
                 decap: Mapping[int, tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """One row per tenant (``vnis``: tenant name -> VNI): what arrived on its VNI; with
    ``decap`` (VNI -> (decap interface, packets it received)), those two as well."""
    per_vni = verdict.get("tenants") or {}
    rows = []
    for tenant, vni in vnis.items():
        seen = per_vni.get(str(vni)) or {}
        rows.append({
            "tenant": tenant,
            "vni": vni,
            "sent": None if sent is None else sent.get(tenant),
            "packets": int(seen.get("packets", 0)),
            "requests": int(seen.get("requests", 0)),
            "responses": int(seen.get("responses", 0)),
            "delivered": bool(seen.get("delivered", False)),
            "outer_sources": list(seen.get("outer_sources", [])),
        })
        if decap is not None:
            interface, received = decap.get(vni, (None, 0))
            rows[-1].update(decap_interface=interface, decap_packets=received)
    return rows


def separation_problems(verdict: Mapping[str, Any], vnis: Mapping[str, int],
                        sent: Mapping[str, int] | None = None) -> list[str]:
    """Why the tenants can't be told apart (empty: they can)."""
    problems: list[str] = []
    shared = sorted({v for v in vnis.values() if list(vnis.values()).count(v) > 1})
    for vni in shared:
        names = [t for t, v in vnis.items() if v == vni]
        problems.append(f"tenants {', '.join(names)} all stamp VNI {vni}")
    rows = tenant_table(verdict, vnis, sent)
    for row in rows:
        if not row["delivered"]:
            problems.append(f"tenant {row['tenant']}'s VNI {row['vni']} carried no whole "
                            f"exchange ({row['requests']} requests, {row['responses']} "
                            "responses)")
        elif row["sent"] is not None and row["requests"] > row["sent"]:
            # More than the tenant sent: another tenant's requests are on this VNI. (Fewer is
            # loss, which the verdict's loss figures report; it mixes nobody up.)
            problems.append(f"VNI {row['vni']} carries {row['requests']} requests, tenant "
                            f"{row['tenant']} sent {row['sent']}")
    expected = {str(v) for v in vnis.values()}
    strays = sorted(v for v in (verdict.get("tenants") or {}) if v not in expected)
    if strays:
        problems.append(f"VNI(s) {', '.join(strays)} belong to no tenant")
    return problems


def separate_tenants(verdict: dict[str, Any], vnis: Mapping[str, int],
                     sent: Mapping[str, int] | None = None,
                     decap: Mapping[int, tuple[str, int]] | None = None) -> dict[str, Any]:
    """Add ``tenant_table`` (and ``tenants_told_apart``) to ``verdict`` and have the judge
    (``vtaplab.judge.outcome.settle``) decide again with them. Returns ``verdict``."""
    from vtaplab.judge.outcome import settle

    verdict["tenant_table"] = tenant_table(verdict, vnis, sent, decap)
    verdict["tenants_told_apart"] = not separation_problems(verdict, vnis, sent)
    return settle(verdict)


def format_tenant_table(rows: list[dict[str, Any]]) -> str:
    """The per-tenant table the emulator prints (tenant, VNI, sent, requests, ...)."""
    with_decap = any("decap_interface" in row for row in rows)
    table = [("tenant", "vni", "sent", "requests", "responses", "packets", "delivered",
              *(("decap interface", "decap packets") if with_decap else ()),
              "outer sources")]
    for row in rows:
        decap = ((row.get("decap_interface") or "-", str(row.get("decap_packets", 0)))
                 if with_decap else ())
        table.append((row["tenant"], str(row["vni"]),
                      "-" if row["sent"] is None else str(row["sent"]),
                      str(row["requests"]), str(row["responses"]), str(row["packets"]),
                      "yes" if row["delivered"] else "NO", *decap,
                      ", ".join(row["outer_sources"]) or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in table)
