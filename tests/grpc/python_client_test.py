#!/usr/bin/python3
"""An independent bmserve.v1 client in Python (Debian python3-grpcio), run against a real
`bmserve serve --demo`: streaming Generate with n = 2 and a seed, checked against a
non-streaming call, the Detokenize RPC and the usage counts; one bad request; and server
reflection listing the services.

usage: python_client_test.py --bmserve BIN --proto-dir DIR   (run with /usr/bin/python3)
Stubs are generated at run time with protoc --python_out and the grpc_python_plugin.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


def generate_stubs(proto_dir, out_dir):
    plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
    subprocess.run(["protoc", "--proto_path", proto_dir, "--python_out", out_dir,
                    "--grpc_python_out", out_dir,
                    "--plugin=protoc-gen-grpc_python=" + plugin,
                    os.path.join(proto_dir, "bmserve/v1/inference.proto")], check=True)


def start_server(binary):
    proc = subprocess.Popen([binary, "serve", "--demo", "--http-port", "0", "--grpc-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    port = None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on grpc://[^ ]*:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.kill()
        raise SystemExit("server did not start:\n" + "".join(lines))
    # Keep draining its output so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port


def collect(stub, pb, request):
    choices = {}
    for resp in stub.Generate(request, timeout=60):
        kind = resp.WhichOneof("response")
        part = getattr(resp, kind)
        c = choices.setdefault(part.index, {"tokens": [], "text": "", "finish": None,
                                            "chunks": 0, "completes": 0, "usage": None})
        if kind == "chunk":
            c["chunks"] += 1
        elif kind == "complete":
            c["completes"] += 1
            c["finish"] = part.finish_reason
            c["usage"] = part.usage
        else:
            raise AssertionError("unexpected error message: %s" % part)
        c["tokens"] += list(part.token_ids)
        c["text"] += part.text
    return choices


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bmserve", required=True)
    ap.add_argument("--proto-dir", required=True)
    args = ap.parse_args()

    gen_dir = tempfile.mkdtemp(prefix="bms_pystubs_")
    generate_stubs(args.proto_dir, gen_dir)
    sys.path.insert(0, gen_dir)
    import grpc  # noqa: E402
    from bmserve.v1 import inference_pb2 as pb  # noqa: E402
    from bmserve.v1 import inference_pb2_grpc as pb_grpc  # noqa: E402

    proc, port = start_server(args.bmserve)
    try:
        channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        stub = pb_grpc.InferenceStub(channel)
        max_tokens = 20
        prompt = "To be, or not to be"

        def request(stream):
            return pb.GenerateRequest(
                text=prompt, n=2, stream=stream,
                sampling=pb.SamplingParams(max_tokens=max_tokens, seed=42, ignore_eos=True))

        streamed = collect(stub, pb, request(True))
        unary = collect(stub, pb, request(False))
        prompt_tokens = stub.Tokenize(pb.TokenizeRequest(text=prompt)).count
        assert sorted(streamed) == [0, 1], streamed.keys()
        for i in (0, 1):
            s, u = streamed[i], unary[i]
            assert s["completes"] == 1 and u["completes"] == 1, (s, u)
            assert u["chunks"] == 0, u
            assert len(s["tokens"]) == max_tokens, s
            assert s["finish"] == pb.FINISH_REASON_LENGTH, s["finish"]
            assert s["usage"].completion_tokens == max_tokens
            assert s["usage"].prompt_tokens == prompt_tokens
            assert s["tokens"] == u["tokens"] and s["text"] == u["text"], (s, u)
            detok = stub.Detokenize(pb.DetokenizeRequest(token_ids=s["tokens"],
                                                         skip_special_tokens=True)).text
            assert s["text"] == detok, (s["text"], detok)
        assert streamed[0]["tokens"] != streamed[1]["tokens"]

        try:
            collect(stub, pb, pb.GenerateRequest(
                text=prompt, sampling=pb.SamplingParams(temperature=9.0)))
            raise AssertionError("temperature 9 was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
            assert "temperature" in e.details(), e.details()
        # Server reflection lists the services (raw ServerReflectionRequest{list_services: ""}).
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        listing = b"".join(reflect(iter([b"\x3a\x00"]), timeout=30))
        for service in (b"bmserve.v1.Inference", b"grpc.health.v1.Health"):
            assert service in listing, listing
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -1
        shutil.rmtree(gen_dir, ignore_errors=True)
    assert rc == 0, "serve exited with %s" % rc
    print("python grpc client: OK")


if __name__ == "__main__":
    main()
