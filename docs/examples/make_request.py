#!/usr/bin/env python3
"""Builds a Slim Scheduler InferRequest payload (MessagePack) for one held-out digit.

Usage:
    python3 make_request.py --reply-to slim/v1/clients/me/replies --out payload.bin
        [--id my-id] [--index 0] [--models-dir models] [--top-k 3]

Reads sample number --index from models/digits/holdout_x.npy (uint8, shape [540, 1, 8, 8]) and
its label from holdout_y.npy. The .npy header is parsed by hand, so numpy is not needed; only
`msgpack` is (pip install msgpack). Writes the payload to --out and prints the expected label.
"""

import argparse
import ast
import struct
import time
import uuid

import msgpack


def read_npy(path):
    """Returns (descr, shape, raw little-endian bytes) of a C-order .npy file."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:6] != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file")
    major = blob[6]
    if major == 1:
        (header_len,) = struct.unpack("<H", blob[8:10])
        start = 10
    else:
        (header_len,) = struct.unpack("<I", blob[8:12])
        start = 12
    header = ast.literal_eval(blob[start:start + header_len].decode("latin1"))
    if header["fortran_order"]:
        raise ValueError(f"{path} is in Fortran order")
    return header["descr"], tuple(header["shape"]), blob[start + header_len:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reply-to", required=True, help="topic the answer is published to")
    parser.add_argument("--out", required=True, help="file the MessagePack payload is written to")
    parser.add_argument("--id", default=None, help="request id (default: a fresh UUID)")
    parser.add_argument("--index", type=int, default=0, help="which held-out digit to send")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()

    descr, shape, raw = read_npy(f"{args.models_dir}/digits/holdout_x.npy")
    assert descr == "|u1" and len(shape) == 4, (descr, shape)  # uint8 [N, 1, 8, 8]
    sample_shape = list(shape[1:])  # [C, H, W] = [1, 8, 8]
    size = sample_shape[0] * sample_shape[1] * sample_shape[2]
    pixels = raw[args.index * size:(args.index + 1) * size]

    descr, _, raw = read_npy(f"{args.models_dir}/digits/holdout_y.npy")
    assert descr == "<i8", descr
    (label,) = struct.unpack_from("<q", raw, 8 * args.index)

    request = {
        "v": 1,                          # protocol version
        "id": args.id or str(uuid.uuid4()),
        "model": "digits",               # must match the topic's {model}
        "input": {
            "dtype": "u8",               # raw pixels; the agent normalizes them
            "shape": sample_shape,       # [1, 8, 8]; [1, 1, 8, 8] works too
            "data": bytes(pixels),       # bin, row-major
        },
        "reply_to": args.reply_to,
        "top_k": args.top_k,
        "sent_at_ms": int(time.time() * 1000),
    }
    with open(args.out, "wb") as f:
        f.write(msgpack.packb(request))  # a map with named fields; bytes -> bin

    print(f"request id {request['id']}: held-out digit #{args.index}, label {label}")


if __name__ == "__main__":
    main()
