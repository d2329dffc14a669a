"""The API server's Table format read back as objects: each row's printer-column values put at their JSON paths,
beside the row's metadata, so that one function (`record.from_object`) makes the fleet record of both.

Asked with `includeObject=Metadata`, each row carries its object's metadata (namespace, creationTimestamp,
labels) and with it `managedFields`, which is most of the answer (about 1.4 of every 1.6 kB here) and most of
the time `json.loads` takes. `loads` cuts those lists out of the bytes before parsing; when the answer is not
laid out as expected, it parses the whole answer instead (slower, never different).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from steadfast.api.kinds import Kind

# The Accept header that asks for a Table instead of a list of objects.
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

# ObjectMeta's last field, closing the metadata, the PartialObjectMetadata and the row: the API server writes
# each row as {"cells":[..],"object":{"kind":..,"apiVersion":..,"metadata":{..,"managedFields":[..]}}}. Inside
# managedFields no key is "cells", so the first `]}}}` followed by the next row (or the end of the rows) ends it.
_MANAGED_FIELDS = re.compile(rb',"managedFields":\[.*?\]\}\}\}(?=,\{"cells":|\])', re.DOTALL)


def loads(data: bytes) -> dict[str, Any]:
    """A Table answer as JSON, without the rows' managedFields (which nothing here reads)."""
    lean, cut = _MANAGED_FIELDS.subn(b"}}}", data)
    if cut:
        try:
            table: dict[str, Any] = json.loads(lean)
        except ValueError:
            pass
        else:
            if all(_named(row) for row in table.get("rows") or []):
                return table
    whole: dict[str, Any] = json.loads(data)
    return whole


def _named(row: Any) -> bool:
    """Whether a row kept its shape: cells, and metadata naming the object of the first cell (Name)."""
    if not isinstance(row, dict) or not isinstance(row.get("cells"), list) or not row["cells"]:
        return False
    meta = (row.get("object") or {}).get("metadata")
    return isinstance(meta, dict) and meta.get("name") == row["cells"][0]


def _put(target: dict[str, Any], json_path: str, value: Any) -> None:
    *parents, leaf = json_path.lstrip(".").split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value


def objects(kind: Kind, table: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of `table` (an answer for `kind`) as objects with only the fields the columns show.

    Columns are matched by name with the kind's printer columns; `date` columns are skipped (the API server
    sends them as ages, `5m`; the creation time comes from the metadata). Columns a CRD installed before this
    version lacks are missing from the objects, and so from the records' detail."""
    paths = {c.name: c.json_path for c in kind.printer_columns if c.type != "date"}
    where = [(i, paths.get(str(d.get("name")))) for i, d in enumerate(table.get("columnDefinitions") or [])]
    for row in table.get("rows") or []:
        cells = row.get("cells") or []
        obj: dict[str, Any] = {"metadata": dict((row.get("object") or {}).get("metadata") or {})}
        for i, path in where:
            if path and i < len(cells) and cells[i] is not None:
                _put(obj, path, cells[i])
        yield obj
