#!/usr/bin/env python3
"""Build meridian's bundled demo models from scikit-learn's bundled datasets.

    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python generate.py

Each model directory gets:
  model.onnx      the graph (plain ONNX ops only: tract 0.23 lacks ai.onnx.ml Scaler/ZipMap,
                  so the standard scaler is written as Sub/Mul and class probabilities come
                  from a Softmax, labels from an ArgMax)
  model.toml      the feature spec pushed with it (ordered feature names, output meaning, metrics)
  reference.json  held-out rows with onnxruntime's outputs, which meridian's tests must reproduce
and patients.csv holds every breast-cancer row as a feature-store entity (`patient_id`).

The models are trained on a fixed split with fixed seeds, so reruns give the same files.
"""
import json
import os
import re

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 13
REFERENCE_ROWS = 16


def snake(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def scaler_nodes(mean, scale):
    """(x - mean) * (1 / scale): the StandardScaler as plain arithmetic."""
    inits = [init("scaler_mean", mean), init("scaler_inv_std", 1.0 / scale)]
    nodes = [
        helper.make_node("Sub", ["input", "scaler_mean"], ["centered"]),
        helper.make_node("Mul", ["centered", "scaler_inv_std"], ["scaled"]),
    ]
    return nodes, inits


def binary_head(prev, weights, bias, nodes, inits):
    """A logistic unit z = prev·w + b as two logits [0, z], so Softmax gives [1-σ(z), σ(z)]."""
    w = np.asarray(weights, dtype=np.float32).reshape(-1)
    w2 = np.stack([np.zeros_like(w), w], axis=1)
    b2 = np.array([0.0, float(np.asarray(bias).reshape(-1)[0])], dtype=np.float32)
    inits += [init("head_w", w2), init("head_b", b2)]
    nodes += [
        helper.make_node("Gemm", [prev, "head_w", "head_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]


def classifier_graph(name, n_features, nodes, inits):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        inits,
    )
    return graph


def finish(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="meridian-demo-generator")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def logreg_model(x_train, y_train, mean, scale):
    clf = LogisticRegression(max_iter=5000, C=1.0)
    clf.fit((x_train - mean) / scale, y_train)
    nodes, inits = scaler_nodes(mean, scale)
    binary_head("scaled", clf.coef_[0], clf.intercept_, nodes, inits)
    return finish(classifier_graph("breast_cancer_logreg", x_train.shape[1], nodes, inits))


def mlp_model(x_train, y_train, mean, scale):
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=800, random_state=0)
    clf.fit((x_train - mean) / scale, y_train)
    nodes, inits = scaler_nodes(mean, scale)
    prev = "scaled"
    for i, (w, b) in enumerate(zip(clf.coefs_[:-1], clf.intercepts_[:-1])):
        # Hidden layers as PyTorch exports Linear: Gemm with a [out, in] weight and transB=1.
        inits += [init(f"fc{i}_w", w.T), init(f"fc{i}_b", b)]
        nodes += [
            helper.make_node("Gemm", [prev, f"fc{i}_w", f"fc{i}_b"], [f"fc{i}"], transB=1),
            helper.make_node("Relu", [f"fc{i}"], [f"relu{i}"]),
        ]
        prev = f"relu{i}"
    binary_head(prev, clf.coefs_[-1], clf.intercepts_[-1], nodes, inits)
    return finish(classifier_graph("breast_cancer_mlp", x_train.shape[1], nodes, inits))


def ridge_model(x_train, y_train, mean, scale):
    reg = Ridge(alpha=1.0)
    reg.fit((x_train - mean) / scale, y_train)
    nodes, inits = scaler_nodes(mean, scale)
    inits += [init("ridge_w", reg.coef_.reshape(-1, 1)), init("ridge_b", [reg.intercept_])]
    nodes.append(helper.make_node("Gemm", ["scaled", "ridge_w", "ridge_b"], ["value"]))
    graph = helper.make_graph(
        nodes,
        "diabetes_ridge",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", x_train.shape[1]])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    return finish(graph)


def toml_list(items):
    return "[\n" + "".join(f'  "{i}",\n' for i in items) + "]"


def write_model(name, model, features, output_toml, metrics, description, x_test, y_test):
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.onnx")
    onnx.save(model, path)

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x32 = x_test.astype(np.float32)
    output_names = [o.name for o in session.get_outputs()]
    results = dict(zip(output_names, session.run(None, {"input": x32})))

    if "probabilities" in results:
        predicted = results["label"]
        metrics = dict(metrics, accuracy=round(float(accuracy_score(y_test, predicted)), 4))
    else:
        metrics = dict(metrics, r2=round(float(r2_score(y_test, results["value"][:, 0])), 4))

    metric_lines = "".join(f"{k} = {v}\n" for k, v in sorted(metrics.items()))
    with open(os.path.join(out, "model.toml"), "w") as f:
        f.write(f'# Feature spec of the demo model {name}; made by models/demo/generate.py.\n')
        f.write(f'name = "{name}"\n')
        f.write(f'description = "{description}"\n')
        f.write(f"features = {toml_list(features)}\n\n")
        f.write(output_toml)
        f.write("\n[metrics]\n" + metric_lines)

    rows = x32[:REFERENCE_ROWS]
    reference = {
        "model": name,
        "note": "outputs computed by onnxruntime " + ort.__version__ + " on held-out rows",
        "rows": [
            {feature: float(value) for feature, value in zip(features, row)} for row in rows
        ],
        "outputs": {k: v[:REFERENCE_ROWS].tolist() for k, v in results.items()},
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print(f"{name}: {metrics} -> {path}")


def main():
    cancer = load_breast_cancer()
    features = [snake(n) for n in cancer.feature_names]
    x_train, x_test, y_train, y_test = train_test_split(
        cancer.data, cancer.target, test_size=0.25, random_state=42, stratify=cancer.target)
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
    classes = list(cancer.target_names)  # ["malignant", "benign"]
    output = (
        "[output]\n"
        'kind = "classifier"\n'
        'probabilities = "probabilities"\n'
        f"classes = {json.dumps(classes)}\n"
        "positive_class = 1\n"
    )
    for name, build, desc in [
        ("breast-cancer-logreg", logreg_model, "Logistic regression on the Wisconsin breast cancer dataset; prediction = P(benign)"),
        ("breast-cancer-mlp", mlp_model, "MLP 30-64-32-2 on the Wisconsin breast cancer dataset; prediction = P(benign)"),
    ]:
        model = build(x_train, y_train, mean, scale)
        write_model(name, model, features, output, {}, desc, x_test, y_test)

    # Every patient as a feature-store entity (patient_id p0..p568), for predict-by-entity demos.
    with open(os.path.join(HERE, "patients.csv"), "w") as f:
        f.write("patient_id," + ",".join(features) + "\n")
        for i, row in enumerate(cancer.data):
            f.write(f"p{i}," + ",".join(repr(float(np.float32(v))) for v in row) + "\n")

    diabetes = load_diabetes()
    x_train, x_test, y_train, y_test = train_test_split(
        diabetes.data, diabetes.target, test_size=0.25, random_state=42)
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
    output = '[output]\nkind = "regressor"\nvalue = "value"\n'
    model = ridge_model(x_train, y_train, mean, scale)
    write_model("diabetes-ridge", model, list(diabetes.feature_names), output, {},
                "Ridge regression of disease progression one year after baseline (diabetes dataset)",
                x_test, y_test)


if __name__ == "__main__":
    main()
