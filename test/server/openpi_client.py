"""A Python client for the m2vla server, written to openpi's wire format (openpi_client's msgpack_numpy and
websocket_client_policy): numpy arrays as msgpack maps with *bytes* keys, metadata frame first, text frame = error.

Needs msgpack, numpy, websockets. Modes (one JSON document on stdout):
  infer URL SEEDS [API_KEY]  LIBERO observations number SEEDS (comma-separated; same formulas as helpers.ts)
  bad URL                    an observation with a float32 image: expects a text frame, then close 1011
  describe                   decode a msgpack frame from stdin, describe its arrays
  sample                     write a msgpack frame of assorted arrays and numpy scalars to stdout (binary)
"""

import json
import os
import sys

import numpy as np

# The wire format lives with the evaluation client (eval/openpi_wire.py); this probe uses the same code.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "eval"))
from openpi_wire import pack, unpack  # noqa: E402

PROMPTS = ["put the black bowl on the plate", "open the top drawer", "pick up the ketchup and place it in the basket"]


def libero_observation(seed):
    n = 224 * 224 * 3

    def image(offset):
        return ((np.arange(n, dtype=np.int64) * (seed + 1) + 7 * seed + offset) % 256).astype(np.uint8).reshape(224, 224, 3)

    return {
        "observation/image": image(0),
        "observation/wrist_image": image(101),
        "observation/state": 0.1 * seed - 0.05 * np.arange(8, dtype=np.float64),
        "prompt": PROMPTS[seed % len(PROMPTS)],
    }


def connect(url, api_key=None):
    from websockets.sync.client import connect as ws_connect

    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
    ws = ws_connect(url, compression=None, max_size=None, additional_headers=headers)
    return ws, unpack(ws.recv())


def infer(url, seeds, api_key=None):
    ws, metadata = connect(url, api_key)
    results = []
    for seed in seeds:
        ws.send(pack(libero_observation(seed)))
        reply = ws.recv()
        if isinstance(reply, str):
            raise RuntimeError(f"server error:\n{reply}")
        out = unpack(reply)
        actions = out["actions"]
        results.append({"seed": seed, "dtype": actions.dtype.str, "shape": list(actions.shape),
                        "actions": actions.tolist(), "policy_timing": out["policy_timing"],
                        "server_timing": out["server_timing"]})
    ws.close()
    return {"metadata": metadata, "results": results}


def bad(url):
    from websockets.exceptions import ConnectionClosed

    ws, _ = connect(url)
    obs = libero_observation(0)
    obs["observation/image"] = obs["observation/image"].astype(np.float32)
    ws.send(pack(obs))
    text = ws.recv()
    try:
        ws.recv()
    except ConnectionClosed as e:
        return {"text_frame": isinstance(text, str), "error": text, "close_code": e.rcvd.code if e.rcvd else None}
    return {"error": "connection stayed open"}


def describe(frame):
    def one(v):
        if isinstance(v, np.ndarray):
            return {"ndarray": v.dtype.str, "shape": list(v.shape), "values": v.ravel().tolist()}
        if isinstance(v, np.generic):
            return {"npgeneric": v.dtype.str, "value": v.item()}
        if isinstance(v, bytes):
            return {"bytes": len(v)}
        if isinstance(v, dict):
            return {k.decode() if isinstance(k, bytes) else k: one(x) for k, x in v.items()}
        return v

    return one(unpack(frame))


def sample():
    return pack({
        "f4": np.array([[1.5, -2.0, 3.25]], dtype=np.float32),
        "f8": np.array([np.pi, -np.inf, 1e-300]),
        "u1": np.arange(12, dtype=np.uint8).reshape(2, 3, 2),
        "i8": np.array([-(2**40), 7], dtype=np.int64),
        "b1": np.array([True, False, True]),
        "i2": np.array([-3, 300], dtype=np.int16),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar_f4": np.float32(0.5),
        "scalar_i8": np.int64(-9),
        "scalar_bool": np.bool_(True),
        "nested": {"x": np.array([1, 2], dtype=np.int32), "s": "text"},
        "unaligned": [b"xyz", np.array([1.25, 2.5], dtype=np.float64)],
    })


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "infer":
        out = infer(sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4] if len(sys.argv) > 4 else None)
    elif mode == "bad":
        out = bad(sys.argv[2])
    elif mode == "describe":
        out = describe(sys.stdin.buffer.read())
    elif mode == "sample":
        sys.stdout.buffer.write(sample())
        sys.exit(0)
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump(out, sys.stdout)
