"""x-kubernetes-list-type map keys (defaults applied) and set items must be unique."""

from __future__ import annotations

from predictors.deploy.validation.listmaps import list_map_errors

PORTS = {
    "type": "object",
    "properties": {
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
            "items": {"type": "object", "properties": {
                "containerPort": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}},
        },
        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "byName": {"type": "object", "additionalProperties": {"$ref": "unused", "type": "array",
                                                              "x-kubernetes-list-type": "set", "items": {}}},
    },
}


def test_distinct_keys_pass():
    assert list_map_errors({"ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}]}, PORTS) == []


def test_a_default_makes_two_entries_the_same():
    errors = list_map_errors({"ports": [{"containerPort": 8080}, {"containerPort": 8080, "protocol": "TCP"}]}, PORTS)
    assert errors == ["ports[1]: duplicate entry (containerPort=8080, protocol='TCP'), already at ports[0]"]


def test_a_key_field_without_default_must_be_set():
    assert list_map_errors({"ports": [{"protocol": "TCP"}]}, PORTS) == ["ports[0]: list-map key field(s) ['containerPort'] must be set"]


def test_set_items_unique_also_under_a_map_value():
    assert list_map_errors({"tags": ["a", "b", "a"]}, PORTS) == ["tags[2]: duplicate value 'a' in a set list"]
    assert list_map_errors({"byName": {"x.io/y": [1, 1]}}, PORTS) == ["byName[x.io/y][1]: duplicate value 1 in a set list"]
