"""The desired ResourceSlices of a driver, and how they differ from the stored ones.

Pure functions from the backend's models (``Device``, ``CounterSet``, ``Pool``) to
``resource.k8s.io/v1`` ResourceSlice dicts, and from desired plus stored slices to the
writes that reconcile them.  No API calls, clock or randomness: the same inventory always
gives the same slices, which is what lets an unchanged resync write nothing.

* A node-local pool (``NodePool``) is named after the node, sets ``spec.nodeName`` and a
  controller owner reference to the Node (slices are garbage-collected with it).  A cluster
  pool (``models.Pool``) uses ``nodeSelector``, ``allNodes`` or ``perDeviceNodeSelection``
  and has no owner.
* Devices are cut, in inventory order, into slices of at most 128 devices, or 64 once a
  slice holds a device with taints or ``consumesCounters``.  Shared counter sets follow in
  slices of their own (at most 8 each; 1.35 refuses slices with both).  An empty pool is
  one empty slice, so consumers see it exists.  The cut depends only on the order and kind
  of devices: a device whose attributes change changes one slice; a device added, removed
  or tainted for the first time moves the cut of the slices after it.
* ``generateName`` is ``<index as hex, 5+ digits>-<driver>-<pool>-`` (Go helper v0.36+),
  lowercased, other characters than ``[a-z0-9.-]`` replaced, cut to 58 characters: the
  API server keeps 58 and appends 5 random ones, so names stay DNS subdomains of ≤ 63.
* ``diff_pool`` compares semantically (``comparable``: no empty fields, quantities by
  value, taint times in seconds) and chooses the generation as the Go helper does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..models import AttributeValue, CounterSet, Device, DeviceTaint, Pool, Version
from .slicevalidation import (
    MAX_COUNTER_SETS,
    MAX_DEVICES,
    MAX_DEVICES_ADVANCED,
    QuantityError,
    parse_quantity,
)

API_VERSION = "resource.k8s.io/v1"
MAX_GENERATE_NAME = 58  # the API server keeps this much of generateName and appends 5
JsonDict = dict[str, Any]
FieldPath = tuple[str, ...]  # map keys, and "*" for list items: ("devices", "*", "taints")
SELECTION = ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


@attrs.frozen
class NodePool:
    """What the node-local pool holds: the backend's devices and shared counter sets."""

    devices: Sequence[Device] = ()
    counter_sets: Sequence[CounterSet] = ()


@attrs.frozen
class PoolSlices:
    """The desired slices of one pool, before a generation is chosen.

    ``selection`` holds the spec's node-selection field (``{"nodeName": ...}``,
    ``{"allNodes": True}``, ...), ``owner`` the owner reference or ``None``, and
    ``contents`` one entry per slice: ``{"devices": [...]}`` or ``{"sharedCounters": [...]}``
    (``{}`` for the empty slice of an empty pool).
    """

    driver: str
    name: str
    selection: Mapping[str, Any]
    owner: Mapping[str, Any] | None
    contents: tuple[Mapping[str, Any], ...]

    def spec(self, *, index: int, generation: int) -> JsonDict:
        """The full ``spec`` of slice ``index``."""
        pool = {"name": self.name, "generation": generation,
                "resourceSliceCount": len(self.contents)}
        return {"driver": self.driver, "pool": pool, **_plain(self.selection),
                **_plain(self.contents[index])}

    def object(self, *, index: int, generation: int) -> JsonDict:
        """Slice ``index`` as a v1 object to create."""
        meta: JsonDict = {"generateName": generate_name(driver=self.driver, pool=self.name,
                                                        index=index)}
        if self.owner is not None:
            meta["ownerReferences"] = [_plain(self.owner)]
        return {"apiVersion": API_VERSION, "kind": "ResourceSlice", "metadata": meta,
                "spec": self.spec(index=index, generation=generation)}

    def objects(self, *, generation: int) -> list[JsonDict]:
        """Every slice of the pool, at ``generation``."""
        return [self.object(index=i, generation=generation) for i in range(len(self.contents))]


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists (``Mapping`` and tuples included)."""
    if type(value) is dict or isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- devices ---------------------------------------------------------------------------
def attribute_json(value: AttributeValue) -> JsonDict:
    """``{"bool": ..}``, ``{"int": ..}``, ``{"string": ..}`` or ``{"version": ..}``."""
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, str):
        return {"string": value}
    if isinstance(value, Version):
        return {"version": value.value}
    raise TypeError(f"unsupported attribute value {value!r} ({type(value).__name__}); "
                    "use bool, int, str or Version")


def taint_json(taint: DeviceTaint) -> JsonDict:
    out = {"key": taint.key, "value": taint.value, "effect": taint.effect,
           "timeAdded": taint.time_added}
    return {k: v for k, v in out.items() if v}


def _counters(counters: Mapping[str, str]) -> JsonDict:
    return {name: {"value": str(counters[name])} for name in sorted(counters)}


def device_json(device: Device) -> JsonDict:
    """One device as it appears in ``spec.devices``; empty fields are left out.  An
    attribute of an unsupported type is a ``TypeError`` naming device and attribute."""
    attributes = {}
    for key in sorted(device.attributes):
        try:
            attributes[key] = attribute_json(device.attributes[key])
        except TypeError as exc:
            raise TypeError(f"device {device.name!r}: attributes[{key}]: {exc}") from None
    out = {"name": device.name, "attributes": attributes,
           "capacity": {k: {"value": str(device.capacity[k])} for k in sorted(device.capacity)},
           "consumesCounters": [{"counterSet": c.counter_set, "counters": _counters(c.counters)}
                                for c in device.consumes_counters],
           "taints": [taint_json(t) for t in device.taints], "nodeName": device.node_name,
           "nodeSelector": _plain(device.node_selector), "allNodes": device.all_nodes or None}
    return {k: v for k, v in out.items() if v is not None and v != {} and v != []}


def _advanced(device: Mapping[str, Any]) -> bool:
    return bool(device.get("taints") or device.get("consumesCounters"))


def split_devices(devices: Sequence[JsonDict]) -> list[list[JsonDict]]:
    """Cut devices, in order, into slices of at most 128 (64 with taints or counters)."""
    chunks: list[list[JsonDict]] = []
    current: list[JsonDict] = []
    current_advanced = False
    for device in devices:
        advanced = current_advanced or _advanced(device)
        limit = MAX_DEVICES_ADVANCED if advanced else MAX_DEVICES
        if current and len(current) >= limit:
            chunks.append(current)
            current, advanced = [], _advanced(device)
        current.append(device)
        current_advanced = advanced
    if current:
        chunks.append(current)
    return chunks


def _contents(devices: Sequence[Device], counter_sets: Sequence[CounterSet]
              ) -> tuple[JsonDict, ...]:
    contents: list[JsonDict] = [{"devices": chunk}
                                for chunk in split_devices([device_json(d) for d in devices])]
    sets = [{"name": c.name, "counters": _counters(c.counters)} for c in counter_sets]
    contents += [{"sharedCounters": sets[i:i + MAX_COUNTER_SETS]}
                 for i in range(0, len(sets), MAX_COUNTER_SETS)]
    return tuple(contents) or ({},)


# --- pools -----------------------------------------------------------------------------
def node_pool_slices(*, driver: str, node_name: str, node_uid: str, pool: NodePool
                     ) -> PoolSlices:
    """The slices of the node-local pool (named after the node, owned by the Node)."""
    return PoolSlices(driver=driver, name=node_name, selection={"nodeName": node_name},
                      owner={"apiVersion": "v1", "kind": "Node", "name": node_name,
                             "uid": node_uid, "controller": True},
                      contents=_contents(pool.devices, pool.counter_sets))


def cluster_pool_slices(*, driver: str, pool: Pool) -> PoolSlices:
    """The slices of a pool that is not tied to one node (no owner).

    The node selection is taken as given; a pool with none or several of ``node_selector``,
    ``all_nodes`` and ``per_device_node_selection`` is left for validation to report.
    """
    selection: JsonDict = {}
    if pool.node_selector is not None:
        selection["nodeSelector"] = _plain(pool.node_selector)
    if pool.all_nodes:
        selection["allNodes"] = True
    if pool.per_device_node_selection:
        selection["perDeviceNodeSelection"] = True
    return PoolSlices(driver=driver, name=pool.name, selection=selection, owner=None,
                      contents=_contents(pool.devices, pool.shared_counters))


# --- names -----------------------------------------------------------------------------
_INVALID = re.compile(r"[^a-z0-9.-]+")


def _dns_part(text: str) -> str:
    """``text`` as a DNS subdomain: lowercased, other characters replaced by ``-``, every
    dot-separated label starting and ending with an alphanumeric."""
    labels = (label.strip("-") for label in _INVALID.sub("-", text.lower()).split("."))
    return ".".join(label for label in labels if label)


def generate_name(*, driver: str, pool: str, index: int) -> str:
    """``<index as hex, 5+ digits>-<driver>-<pool>-``, safe as a ``generateName``."""
    base = "-".join(part for part in (f"{index:05x}", _dns_part(driver), _dns_part(pool))
                    if part)
    base = base[:MAX_GENERATE_NAME - 1].rstrip(".-")
    return base + "-"


def index_of(name: str, *, driver: str, pool: str, limit: int) -> int | None:
    """The index a slice name was generated for (``None`` when it is none below ``limit``).

    Only used to keep slices at the position their name says when content moves.
    """
    head = name.split("-", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{5,}", head):
        return None
    index = int(head, 16)
    if index >= limit:
        return None
    prefix = generate_name(driver=driver, pool=pool, index=index)
    return index if name.startswith(prefix) and len(name) == len(prefix) + 5 else None


# --- comparing with what is stored -----------------------------------------------------
def _clean(node: Any, ignore: frozenset[FieldPath] = frozenset(), at: FieldPath = ()) -> Any:
    """A copy without empty values and without the ``ignore`` paths."""
    if type(node) is dict or isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            here = (*at, str(key))
            if here not in ignore:
                value = _clean(value, ignore, here)
                if value is not None and value != [] and value != {}:
                    out[str(key)] = value
        return out
    if isinstance(node, list | tuple):
        return [_clean(v, ignore, (*at, "*")) for v in node]
    return node


def _quantities(entry: Mapping[str, Any], key: str) -> None:
    for item in (entry.get(key) or {}).values():
        if "value" in item:
            with contextlib.suppress(QuantityError):
                item["value"] = parse_quantity(str(item["value"]))


def managed(spec: Mapping[str, Any]) -> JsonDict:
    """The part of a spec the publisher decides: node selection, devices, counter sets."""
    return {k: spec[k] for k in (*SELECTION, "devices", "sharedCounters") if k in spec}


def comparable(spec: Mapping[str, Any], *, ignore: frozenset[FieldPath] = frozenset()
               ) -> JsonDict:
    """``managed(spec)`` as the server would echo it: no empty fields, quantities as
    values (``1024Mi`` == ``1Gi``), taint times in UTC seconds, ``ignore`` paths removed."""
    out: JsonDict = _clean(managed(spec), ignore)
    for device in out.get("devices") or ():
        _quantities(device, "capacity")
        for use in device.get("consumesCounters") or ():
            _quantities(use, "counters")
        for taint in device.get("taints") or ():
            m = _TIME.fullmatch(str(taint.get("timeAdded", "")))
            if m and m.group(4) in (None, "Z", "z"):
                taint["timeAdded"] = f"{m.group(1)}T{m.group(2)}Z"
    for counter_set in out.get("sharedCounters") or ():
        _quantities(counter_set, "counters")
    return out


def _loose_key(normal: Mapping[str, Any]) -> str:
    """A hashable form that ignores taint times."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "timeAdded"}
        return [strip(v) for v in node] if isinstance(node, list) else node
    text = json.dumps(normal, sort_keys=True, default=str)
    return json.dumps(strip(normal), sort_keys=True, default=str) if '"timeAdded"' in text else text


def same(*, desired: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Comparable forms equal, where a taint without ``timeAdded`` matches any time."""
    if desired == stored:
        return True
    stored = copy.deepcopy(dict(stored))
    for want, have in zip(desired.get("devices") or (), stored.get("devices") or (),
                          strict=False):
        for t_want, t_have in zip(want.get("taints") or (), have.get("taints") or (),
                                  strict=False):
            if "timeAdded" not in t_want:
                t_have.pop("timeAdded", None)
    return desired == stored


def _paths(node: Any, at: FieldPath = ()) -> set[FieldPath]:
    out: set[FieldPath] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            out |= {(*at, key)} | _paths(value, (*at, key))
    elif isinstance(node, list):
        for value in node:
            out |= _paths(value, (*at, "*"))
    return out


def dropped_fields(*, sent: Mapping[str, Any], stored: Mapping[str, Any]) -> set[FieldPath]:
    """Fields of the spec ``sent`` that the ``stored`` spec lacks (the topmost of each)."""
    missing = _paths(_clean(managed(sent))) - _paths(_clean(managed(stored)))
    return {p for p in missing if not any(p[:i] in missing for i in range(1, len(p)))}


def show_path(path: FieldPath) -> str:
    return "spec." + ".".join(path).replace(".*", "[*]")


def _names(normal: Mapping[str, Any]) -> set[str]:
    items = [*(normal.get("devices") or ()), *(normal.get("sharedCounters") or ())]
    return {str(item.get("name")) for item in items}


def _kind(normal: Mapping[str, Any]) -> str:
    return "devices" if normal.get("devices") else "counters" if normal.get(
        "sharedCounters") else ""


def _spec(obj: Mapping[str, Any]) -> JsonDict:
    return dict(obj.get("spec") or {})


def _meta(obj: Mapping[str, Any]) -> JsonDict:
    return dict(obj.get("metadata") or {})


@attrs.frozen
class PoolChanges:
    """The writes that turn a pool's existing slices into the desired ones, in the order to
    make them: ``delete`` (indexes into the existing slices), ``update`` (pairs of slice
    index and existing index), ``create`` (slice indexes); all at ``generation``."""

    generation: int
    delete: tuple[int, ...] = ()
    update: tuple[tuple[int, int], ...] = ()
    create: tuple[int, ...] = ()

    @property
    def writes(self) -> int:
        return len(self.delete) + len(self.update) + len(self.create)


def _match(pool: PoolSlices, want: list[JsonDict], have: list[JsonDict],
           names: list[str]) -> tuple[dict[int, int], set[int]]:
    """Which existing slice each desired slice reuses, and the unused ones: same content
    first, then the index in the slice's name, then the most shared device names."""
    free = set(range(len(have)))
    pairs: dict[int, int] = {}
    named = [index_of(n, driver=pool.driver, pool=pool.name, limit=len(want)) for n in names]
    by_key: dict[str, list[int]] = {}
    for j, normal in enumerate(have):
        by_key.setdefault(_loose_key(normal), []).append(j)
    for i, normal in enumerate(want):
        candidates = [j for j in by_key.get(_loose_key(normal), []) if j in free]
        if candidates:
            pairs[i] = next((j for j in candidates if named[j] == i), candidates[0])
            free.discard(pairs[i])
    for j in sorted(free):
        index = named[j]
        if index is not None and index not in pairs:
            pairs[index] = j
            free.discard(j)
    for i, normal in enumerate(want):
        if i not in pairs and free:
            wanted, kind = _names(normal), _kind(normal)
            best = max(free, key=lambda j: (_kind(have[j]) == kind,
                                            len(wanted & _names(have[j])), -j))
            pairs[i] = best
            free.discard(best)
    return pairs, free


def diff_pool(pool: PoolSlices, existing: Sequence[Mapping[str, Any]], *,
              ignore: frozenset[FieldPath] = frozenset()) -> PoolChanges:
    """What to write so that ``existing`` (the stored slices of the pool) match ``pool``.

    The generation is kept when at most one existing slice needs an update and nothing is
    created or deleted (as the Go helper does); otherwise it is the highest existing one
    plus 1 (1 for a new pool) and every slice is written.  ``ignore`` lists fields the
    server is known to drop.
    """
    count = len(pool.contents)
    want = [comparable({**pool.selection, **c}, ignore=ignore) for c in pool.contents]
    have = [comparable(_spec(o), ignore=ignore) for o in existing]
    pairs, free = _match(pool, want, have, [str(_meta(o).get("name") or "") for o in existing])
    top = max((int((_spec(o).get("pool") or {}).get("generation") or 0) for o in existing),
              default=0)

    def stale(i: int, generation: int) -> bool:
        obj = existing[pairs[i]]
        target = {"name": pool.name, "generation": generation, "resourceSliceCount": count}
        refs = _meta(obj).get("ownerReferences") or []
        owned = pool.owner is None or any(
            all(ref.get(k) == v for k, v in pool.owner.items()) for ref in refs)
        return not (owned and _spec(obj).get("pool") == target
                    and same(desired=want[i], stored=have[pairs[i]]))

    create = tuple(i for i in range(count) if i not in pairs)
    update = [i for i in sorted(pairs) if stale(i, top)]
    generation = top
    if not existing or create or free or len(update) > 1:
        generation = top + 1
        update = [i for i in sorted(pairs) if stale(i, generation)]
    return PoolChanges(generation=generation, delete=tuple(sorted(free)),
                       update=tuple((i, pairs[i]) for i in update), create=create)


def update_object(pool: PoolSlices, *, index: int, generation: int,
                  stored: Mapping[str, Any]) -> JsonDict:
    """The stored slice with its spec (and owner) replaced by slice ``index`` of ``pool``;
    taints that do not set ``timeAdded`` keep the time the server gave them."""
    body: JsonDict = copy.deepcopy(dict(stored))
    body.update(apiVersion=API_VERSION, kind="ResourceSlice")
    meta = body.setdefault("metadata", {})
    meta.pop("managedFields", None)
    if pool.owner is not None:
        meta["ownerReferences"] = [_plain(pool.owner)]
    spec = body["spec"] = pool.spec(index=index, generation=generation)
    old = {d.get("name"): d for d in _spec(stored).get("devices") or ()}
    for device in spec.get("devices") or ():
        for taint in device.get("taints") or ():
            for have in (old.get(device["name"]) or {}).get("taints") or ():
                if "timeAdded" not in taint and have.get("timeAdded") and all(
                        have.get(k, "") == taint.get(k, "") for k in ("key", "value", "effect")):
                    taint["timeAdded"] = have["timeAdded"]
    return body
