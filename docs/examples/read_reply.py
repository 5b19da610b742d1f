#!/usr/bin/env python3
"""Decodes one Slim Scheduler answer (InferResult or ErrorReply) as printed by mosquitto_sub.

Usage:
    mosquitto_sub ... -C 1 -t <reply topic> > reply.bin
    python3 read_reply.py reply.bin      # or: ... | python3 read_reply.py

mosquitto_sub writes the raw payload followed by one newline; that newline is removed (pass
--raw for a file that holds the payload only, e.g. from `mosquitto_sub -N`). Prints the answer
and exits 0 for a result, 1 for an error reply, 2 when there is nothing to decode.
"""

import argparse
import sys

import msgpack


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="payload file (default: stdin)")
    parser.add_argument("--raw", action="store_true", help="no trailing newline to strip")
    args = parser.parse_args()

    if args.file:
        with open(args.file, "rb") as f:
            data = f.read()
    else:
        data = sys.stdin.buffer.read()
    if not args.raw and data.endswith(b"\n"):
        data = data[:-1]  # exactly the one newline mosquitto_sub added
    if not data:
        print("no answer", file=sys.stderr)
        return 2

    reply = msgpack.unpackb(data)
    if reply.get("error"):
        print(f"error {reply['code']} from {reply['origin']} (request {reply.get('id')}): "
              f"{reply['message']}")
        return 1

    best = reply["top_k"][0]
    t = reply["timings"]
    print(f"request {reply['id']}: class {best['class']} (label {best['label']!r}, "
          f"p={best['score']:.3f})")
    print(f"  agent {reply['agent']}, width {reply['width']}, batch {reply['batch_size']}, "
          f"router {reply['router']}, width accuracy {reply['accuracy']:.3f}")
    print(f"  agent-side latency {t['total_ms']:.2f} ms (queue {t['queue_ms']:.2f}, "
          f"compute {t['compute_ms']:.2f}), energy {reply['energy_j']:.6f} J "
          f"({reply['energy_source']}){', emulated device' if reply.get('emulated') else ''}")
    print("  top_k: " + ", ".join(f"{c['label']}={c['score']:.3f}" for c in reply["top_k"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
