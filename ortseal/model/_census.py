"""The counts docs/format.md "Limits" bounds, taken from a ModelProto's wire format before protobuf parses it.

The parse builds one message per node, attribute and initializer: 10 million empty nodes are 20 MB of file
and 1.5 GB of NodeProtos. So the counts are taken first, building nothing per field, and the first limit
passed stops the count. In three tiers, each only when the one before cannot rule a limit out:

1. A body of at most 2^21 bytes is not read: every node, attribute and initializer takes two bytes or more.
2. The fields of every main graph (graph, local functions, training graphs) are read: their nodes and
   initializers counted exactly; what lies inside the nodes is bounded from their bytes by C searches
   (``bytes.find``/``count``): each attribute, nested or not, has the tag byte ``0x2a``; a subgraph's
   messages follow the tag byte of ``g`` (``0x32``) or ``graphs`` (``0x5a``), at two bytes each.
3. Each node with an attribute that may hold a graph is read field by field, its subgraphs counted as in 2.

Everything else, raw weights above all, is skipped by its length, so the cost grows with the number of graph
fields, not with the file's size. Measured (docs/benchmarks.md) against the alternative of a bound on bytes
of structure alone: a real model of 10^5 nodes has megabytes of node bytes, so that bound either refuses
real models or admits millions of messages. Pure Python costs about 1.3 us per graph field here: nothing
for a body under 2 MiB, under 1 ms for most real models, 4x protobuf's C parse at 10^5 nodes.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import FormatError
from ._graph import MAX_ATTRIBUTES, MAX_GRAPH_NESTING, MAX_INITIALIZERS, MAX_NODES
from ._record import read_varint as _varint

# Field numbers (onnx.proto) of the messages the parse would build and of those that hold them.
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)  # TrainingInfoProto.initialization, .algorithm
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS = 6, 11
_ATTRIBUTE_TAG = b"\x2a"  # field 5, length-delimited
_GRAPH_TAG, _GRAPHS_TAG = b"\x32", b"\x5a"  # fields 6 and 11, length-delimited


def _truncated() -> FormatError:
    return FormatError("not an ONNX model: a protobuf field runs past its message")


def _length_fields(data: bytes, at: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, start, stop)`` of every length-delimited field of the message ``data[at:end]``, the
    others skipped; FormatError on bytes that are not protobuf."""
    while at < end:
        key = data[at]
        at += 1
        if key & 0x80:
            key, at = _varint(data, at - 1)
        wire = key & 7
        if wire == 2:
            size = data[at] if at < end else 0x80
            if size & 0x80:
                size, at = _varint(data, at)
            else:
                at += 1
            if at + size > end or key < 8:
                raise _truncated()
            yield key >> 3, at, at + size
            at += size
        elif wire == 0:
            while at < end and data[at] & 0x80:
                at += 1
            at += 1
        elif wire == 1 or wire == 5:
            at += 8 if wire == 1 else 4
        else:
            raise FormatError(f"not an ONNX model: protobuf wire type {wire} in field {key >> 3}")
    if at > end:
        raise _truncated()


class _Census:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.nodes = self.attributes = self.initializers = 0
        self.loose: list[tuple[int, int]] = []  # nodes whose attributes cannot hold a graph: counted only if needed
        self.loose_bound = 0  # their attribute tag bytes: at least as many as their attributes
        self.exact = False  # False while the main graphs are counted: their nodes wait in ``deferred``
        self.deferred: list[tuple[int, int, int, int]] = []  # graphs: their bytes, depth, node field's key
        self.bound = 0  # half the bytes of the deferred nodes: at least as many as the messages inside them

    def graph(self, at: int, end: int, depth: int, node_field: int = _GRAPH_NODE) -> None:
        """Count one graph's (or function's) nodes and initializers, field by field, stopping at the first
        limit passed; then its nodes' attributes and subgraphs."""
        data = self.data
        node_key = node_field << 3 | 2
        initializer_keys = (_GRAPH_INITIALIZER << 3 | 2, _GRAPH_SPARSE_INITIALIZER << 3 | 2) if node_field == _GRAPH_NODE \
            else ()
        begin = at
        nodes = node_bytes = 0
        while at < end:
            key = data[at]
            at += 1
            if key & 0x80:
                key, at = _varint(data, at - 1)
            wire = key & 7
            if wire == 2:
                size = data[at] if at < end else 0x80
                if size & 0x80:
                    size, at = _varint(data, at)
                else:
                    at += 1
                stop = at + size
                if stop > end or key < 8:
                    raise _truncated()
                if key == node_key:
                    nodes += 1
                    node_bytes += size
                    if self.nodes + nodes > MAX_NODES:
                        raise FormatError(f"the model has more than {MAX_NODES} nodes (docs/format.md, limits)")
                elif key in initializer_keys:
                    self.initializers += 1
                    if self.initializers > MAX_INITIALIZERS:
                        raise FormatError(f"the model has more than {MAX_INITIALIZERS} initializers "
                                          "(docs/format.md, limits)")
                at = stop
            elif wire == 0:
                while at < end and data[at] & 0x80:
                    at += 1
                at += 1
            elif wire == 1 or wire == 5:
                at += 8 if wire == 1 else 4
            else:
                raise FormatError(f"not an ONNX model: protobuf wire type {wire} in field {key >> 3}")
        if at > end:
            raise _truncated()
        self.nodes += nodes
        if not self.exact:  # first, the main graphs only: their nodes may not need to be read (settle)
            self.deferred.append((begin, end, depth, node_key))
            self.bound += node_bytes // 2
            return
        self.read_nodes(begin, end, depth, node_key)

    def read_nodes(self, at: int, end: int, depth: int, node_key: int) -> None:
        for number, start, stop in _length_fields(self.data, at, end):
            if number << 3 | 2 == node_key:
                self.read_node(start, stop, depth)

    def read_node(self, start: int, stop: int, depth: int) -> None:
        first = self.data.find(_ATTRIBUTE_TAG, start, stop)
        if first < 0:
            return  # no attribute
        # A graph's tag byte lies inside an attribute, so after the first attribute tag byte.
        if self.data.find(_GRAPH_TAG, first, stop) >= 0 or self.data.find(_GRAPHS_TAG, first, stop) >= 0:
            self.node(start, stop, depth)
        else:
            self.loose.append((start, stop))
            self.loose_bound += self.data.count(_ATTRIBUTE_TAG, first, stop)

    def node(self, at: int, end: int, depth: int) -> None:
        data = self.data
        for number, start, stop in _length_fields(data, at, end):
            if number != _NODE_ATTRIBUTE:
                continue
            self.attributes += 1
            if self.attributes > MAX_ATTRIBUTES:
                raise FormatError(f"the model has more than {MAX_ATTRIBUTES} node attributes (docs/format.md, limits)")
            if depth >= 0 and (data.find(_GRAPH_TAG, start, stop) >= 0 or data.find(_GRAPHS_TAG, start, stop) >= 0):
                for inner, sub_start, sub_stop in _length_fields(data, start, stop):
                    if inner in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS):
                        if depth >= MAX_GRAPH_NESTING:
                            raise FormatError(f"the model nests subgraphs more than {MAX_GRAPH_NESTING} deep "
                                              "(docs/format.md, limits)")
                        self.graph(sub_start, sub_stop, depth + 1)

    def settle(self) -> None:
        """Read the nodes left unread where what they may hold could pass a limit. Every message inside a
        node (attribute, subgraph, node, initializer) takes two bytes or more, so they hold at most
        ``bound`` of them; when that could pass a limit, a tighter bound from their bytes (C searches, no
        field read), and only when that could too, an exact count."""
        self.exact = True
        if not self._within(self.bound, self.bound):
            attributes_bound = nested_bound = 0
            find, count = self.data.find, self.data.count
            for at, end, _, node_key in self.deferred:
                for number, start, stop in _length_fields(self.data, at, end):
                    if number << 3 | 2 != node_key:
                        continue
                    first = find(_ATTRIBUTE_TAG, start, stop)
                    if first < 0:
                        continue  # no attribute, nothing nested
                    # Each attribute, nested ones too, has a tag byte 0x2a; a subgraph's messages follow its
                    # tag byte (0x32 or 0x5a), which follows the node's first attribute tag byte.
                    attributes_bound += count(_ATTRIBUTE_TAG, first, stop)
                    tags = [i for i in (find(_GRAPH_TAG, first, stop), find(_GRAPHS_TAG, first, stop)) if i >= 0]
                    if tags:
                        nested_bound += (stop - min(tags)) // 2
            if not self._within(nested_bound, attributes_bound):
                for at, end, depth, node_key in self.deferred:
                    self.read_nodes(at, end, depth, node_key)
                if self.attributes + self.loose_bound > MAX_ATTRIBUTES:
                    for start, stop in self.loose:
                        self.node(start, stop, -1)

    def _within(self, nested: int, attributes: int) -> bool:
        """Whether counts so far plus up to ``nested`` unread messages (``attributes`` of them attributes)
        stay within every limit."""
        return (self.nodes + nested <= MAX_NODES and self.attributes + attributes <= MAX_ATTRIBUTES
                and self.initializers + nested <= MAX_INITIALIZERS)

# Each node, attribute and initializer takes at least two bytes of the file (a tag and a length): a body of
# at most this many bytes cannot pass any count limit, and is not read.
_COUNTED_FROM = 2 * min(MAX_NODES, MAX_ATTRIBUTES, MAX_INITIALIZERS) + 1


def check_counts(data: bytes, end: int) -> None:
    """Refuse (FormatError naming the limit) the serialized ModelProto ``data[:end]`` if the parse would
    build more nodes, attributes or initializers, or nest subgraphs deeper, than docs/format.md allows."""
    if end < _COUNTED_FROM:
        return  # nesting too: protobuf's own recursion limit bounds the parse, the walk refuses past ours
    census = _Census(data)
    for number, start, stop in _length_fields(data, 0, end):
        if number == _MODEL_GRAPH:
            census.graph(start, stop, 0)
        elif number == _MODEL_FUNCTIONS:
            census.graph(start, stop, 0, _FUNCTION_NODE)
        elif number == _MODEL_TRAINING:
            for inner, sub_start, sub_stop in _length_fields(data, start, stop):
                if inner in _TRAINING_GRAPHS:
                    census.graph(sub_start, sub_stop, 0)
    census.settle()
