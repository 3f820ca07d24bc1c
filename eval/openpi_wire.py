"""openpi_client's wire format (msgpack_numpy + websocket_client_policy): numpy arrays as msgpack maps with *bytes*
keys; the server sends its metadata as the first frame; a text frame is an error."""
from __future__ import annotations

import msgpack
import numpy as np


def _encode(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in "OVc":
        raise ValueError(f"unsupported dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _decode(obj):
    if b"__ndarray__" in obj:
        return np.frombuffer(obj[b"data"], dtype=np.dtype(obj[b"dtype"])).reshape(obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def pack(obj) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpack(data: bytes):
    return msgpack.unpackb(data, object_hook=_decode)


def connect(url: str):
    """Opens the websocket and reads the metadata frame."""
    from websockets.sync.client import connect as ws_connect

    ws = ws_connect(url, compression=None, max_size=None, open_timeout=30)
    return ws, unpack(ws.recv())
