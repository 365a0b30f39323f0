"""The three PATCH flavours kube-apiserver accepts, and what each does to raw bytes.

* ``application/merge-patch+json`` (RFC 7386): objects merge, ``null`` deletes, lists
  are replaced.
* ``application/strategic-merge-patch+json``: like a merge patch, except for the lists
  the Go types mark ``patchStrategy:"merge"`` (finalizers, ownerReferences,
  ``status.reservedFor``, conditions, containers...), which merge by key, plus the
  ``$patch``, ``$deleteFromPrimitiveList`` and ``$setElementOrder`` directives. The Python
  client sends a dict body as a strategic merge patch, so this matters: a list of
  finalizers in such a patch is *added to* the stored list, not swapped in.
* ``application/json-patch+json`` (RFC 6902).

``patched_raw`` reproduces which RawExtension bytes survive a patch (see
``_fakeapi_rawjson``): the server re-serialises the stored object before patching, so
untouched parameters come back compacted, and values the patch wrote come back with
sorted keys.
"""

from __future__ import annotations

from typing import Any

from dra_framework.testing._fakeapi_json import clone
from dra_framework.testing._fakeapi_rawjson import (
    RawMap,
    RawPath,
    find_raw_paths,
    go_compact,
    go_json,
    go_sorted,
)
from dra_framework.testing._fakeapi_status import ApiError, status

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Lists that merge in a strategic merge patch: path suffix -> merge key ("" = primitives).
_MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "finalizers"): "",
    ("metadata", "ownerReferences"): "uid",
    ("status", "reservedFor"): "uid",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("status", "resourceClaimStatuses"): "name",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "resourceClaims"): "name",
}


def unprocessable(message: str) -> ApiError:
    return ApiError(status(code=422, reason="Invalid", message=message))


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        child = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and child[-2:] in _MERGE_KEYS:
            result[key] = _merge_list(result.get(key), value, _MERGE_KEYS[child[-2:]], child)
        else:
            merged = strategic_merge_patch(result.get(key), value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(current: Any, patch: list[Any], key: str, path: tuple[str, ...]) -> list[Any]:
    items = list(current) if isinstance(current, list) else []
    if not key:
        return items + [v for v in patch if v not in items]
    for entry in patch:
        if not isinstance(entry, dict):
            continue
        matches = [i for i, item in enumerate(items)
                   if isinstance(item, dict) and item.get(key) == entry.get(key)]
        if entry.get("$patch") == "delete":
            items = [item for i, item in enumerate(items) if i not in matches]
        elif matches:
            items[matches[0]] = strategic_merge_patch(items[matches[0]], entry, path)
        else:
            items.append(strategic_merge_patch(None, entry, path))
    return items


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise unprocessable(f"invalid JSON pointer: {text!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in text[1:].split("/")]


def _container(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise unprocessable(f"doc is missing path: /{'/'.join(parts)}: missing value")
    return node, parts[-1]


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    node, last = _container(doc, parts)
    if isinstance(node, dict) and last in node:
        return node[last]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node[int(last)]
    raise unprocessable(f"doc is missing path: /{'/'.join(parts)}: missing value")


def _remove(doc: Any, parts: list[str]) -> Any:
    value = _get(doc, parts)
    node, last = _container(doc, parts)
    if isinstance(node, dict):
        del node[last]
    else:
        del node[int(last)]
    return value


def _add(doc: Any, parts: list[str], value: Any, *, replace: bool) -> Any:
    if not parts:
        return value
    node, last = _container(doc, parts)
    if isinstance(node, dict):
        if replace and last not in node:
            raise unprocessable(f"doc is missing key: /{'/'.join(parts)}: missing value")
        node[last] = value
    elif isinstance(node, list):
        if last == "-" and not replace:
            node.append(value)
        elif last.isdigit() and int(last) <= len(node) - (1 if replace else 0):
            if replace:
                node[int(last)] = value
            else:
                node.insert(int(last), value)
        else:
            raise unprocessable(f"index out of range: /{'/'.join(parts)}")
    else:
        raise unprocessable(f"doc is missing path: /{'/'.join(parts)}: missing value")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise unprocessable("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = clone(target)
    for op in ops:
        if not isinstance(op, dict):
            raise unprocessable("invalid JSON patch operation")
        kind = op.get("op")
        parts = _pointer(str(op.get("path", "")))
        if kind in ("add", "replace"):
            doc = _add(doc, parts, clone(op.get("value")), replace=kind == "replace")
        elif kind == "remove":
            _remove(doc, parts)
        elif kind in ("move", "copy"):
            source = _pointer(str(op.get("from", "")))
            value = _remove(doc, source) if kind == "move" else clone(_get(doc, source))
            doc = _add(doc, parts, value, replace=False)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise unprocessable(f"testing value /{'/'.join(parts)} failed: test failed")
        else:
            raise unprocessable(f"Unexpected kind: {kind}")
    return doc


def apply_patch(content_type: str, target: Any, patch: Any) -> Any:
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise ApiError(status(code=400, reason="BadRequest",
                              message="json: cannot unmarshal array into Go value of type "
                                      "map[string]interface {}"))
    if content_type == STRATEGIC:
        return strategic_merge_patch(target, patch)
    return merge_patch(target, patch)


def _merge_touches(patch: Any, path: RawPath) -> bool:
    node = patch
    for part in path:
        if not isinstance(node, dict) or isinstance(part, int):
            return True
        if part not in node:
            return False
        node = node[part]
    return True


def _json_patch_effect(ops: Any, path: RawPath) -> str:
    effect = "untouched"
    for op in ops if isinstance(ops, list) else []:
        if not isinstance(op, dict):
            continue
        for pointer in (op.get("path"), op.get("from")):
            if not isinstance(pointer, str):
                continue
            parts = tuple(_pointer(pointer))
            mine = tuple(str(p) for p in path)
            if mine[:len(parts)] == parts:
                effect = "replaced"
            elif parts[:len(mine)] == mine and effect == "untouched":
                effect = "inside"
    return effect


def patched_raw(content_type: str, patch: Any, result: Any, old_raw: RawMap) -> RawMap:
    """The RawExtension bytes the server stores after applying ``patch``."""
    raw: RawMap = {}
    for path, value in find_raw_paths(result):
        old = old_raw.get(path)
        if content_type == STRATEGIC:
            raw[path] = go_sorted(value, go_numbers=True)
        elif content_type == JSON_PATCH:
            effect = _json_patch_effect(patch, path)
            if effect == "replaced" or old is None:
                raw[path] = go_json(value)
            else:
                raw[path] = go_sorted(value) if effect == "inside" else go_compact(old)
        elif old is not None and not _merge_touches(patch, path):
            raw[path] = go_compact(old)
        else:
            raw[path] = go_sorted(value)
    return raw
