"""Drive a meridian node with the stock tritonclient HTTP client (Open Inference Protocol).

    python tritonclient_check.py HOST:PORT MODEL REFERENCE_JSON

Exits non-zero with a message when anything differs from the reference outputs.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model, reference_path = sys.argv[1:4]
    with open(reference_path) as f:
        reference = json.load(f)
    client = httpclient.InferenceServerClient(url=url, connection_timeout=10, network_timeout=10)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(model), "model not ready"
    meta = client.get_model_metadata(model)
    features = meta["parameters"]["features"]
    rows = np.array([[row[f] for f in features] for row in reference["rows"]], dtype=np.float32)
    expected = np.array(reference["outputs"]["probabilities"], dtype=np.float32)
    labels = np.array(reference["outputs"]["label"], dtype=np.int64)

    for binary_in in (True, False):
        for binary_out in (True, False):
            inp = httpclient.InferInput(meta["inputs"][0]["name"], list(rows.shape), "FP32")
            inp.set_data_from_numpy(rows, binary_data=binary_in)
            outs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary_out),
                    httpclient.InferRequestedOutput("label", binary_data=binary_out)]
            result = client.infer(model, [inp], outputs=outs)
            got = result.as_numpy("probabilities")
            assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
            assert np.allclose(got, expected, rtol=1e-5, atol=1e-6), f"probabilities differ ({binary_in=}, {binary_out=})"
            assert (result.as_numpy("label") == labels).all(), "labels differ"

    # No outputs named: tritonclient asks for all of them in binary form.
    inp = httpclient.InferInput(meta["inputs"][0]["name"], list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    result = client.infer(model, [inp])
    assert np.allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)

    try:
        client.infer("no-such-model", [inp])
        raise SystemExit("an unknown model did not raise")
    except httpclient.InferenceServerException as e:
        assert "unknown model" in str(e), str(e)
    print("tritonclient: ok")


if __name__ == "__main__":
    main()
