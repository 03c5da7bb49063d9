"""PyTorch's zip checkpoints (`pytorch_model.bin`) read and written with NumPy alone, torch never imported.

`torch.save` (torch >= 1.6) writes a zip archive: `<top>/data.pkl` + `<top>/data/<key>` (+ `byteorder`,
`version`). `data.pkl` is a pickle of the state dict; each tensor in it is a call
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose storage is a *persistent
id* `('storage', torch.HalfStorage, key, location, numel)` naming the raw bytes of `<top>/data/<key>`.

A pickle is a small program, and unpickling runs it, so reading one from a stranger is where the
danger lies. We defend in two passes:

1. `_prescan_pickle` walks the opcodes *without running them* and refuses any opcode a state dict
   does not need, globals outside the allow-list, memo indices out of range, and pickles that are
   too big, nest too deep or would build too many objects (limits below).
2. `_StateDictUnpickler` then runs it, with `find_class` handing out only our own stand-ins for the
   few torch names (and `collections.OrderedDict`); any other global (`os.system`, `builtins.eval`,
   ...) is refused before it can run. Tensors are checked against their storages (every size, stride
   and offset an int64, the view inside the storage) before any array is built.

`save_torch_zip` writes the same format, opcode by opcode, for files `torch.load(weights_only=True)`
reads.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile
import zlib

import numpy as np

from .._files import atomic_open
from .common import CheckpointError, cast_float, checked_int, checked_numel, file_bytes, widen_bf16


class _StorageType:
    """Stand-in for `torch.HalfStorage` & co.: only remembers the element dtype."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, np.dtype(dtype)

    def __setstate__(self, state: object) -> None:
        raise CheckpointError("data.pkl tries to set the state of a storage type")


# torch's storage class names (what `torch.save` writes after `GLOBAL 'torch ...'`) -> element dtype.
TORCH_STORAGES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class _Tensor:
    """A tensor described by the pickle: a strided view into one storage. Materialised after unpickling."""

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state: object) -> None:
        raise CheckpointError("data.pkl tries to set the state of a tensor")

    @property
    def numel(self) -> int:
        n = 1
        for d in self.size:
            n *= d
        return n

    def copy_bytes(self, dtype: np.dtype | None) -> int:
        """How many bytes `to_numpy(dtype)` allocates (0 when it returns a view of the file)."""
        stored = self.storage.array.dtype
        out = np.dtype(np.float32) if self.storage.bf16 else stored
        if dtype is not None and out.kind == "f":
            out = dtype
        view_ok = (out == stored and stored.byteorder != ">" and not self.storage.bf16
                   and self.stride == _contiguous_strides(self.size))
        return 0 if view_ok else self.numel * out.itemsize

    def to_numpy(self, dtype: np.dtype | None) -> np.ndarray:
        """The tensor as an array: a view of the memory map where possible, converted to `dtype`."""
        base = self.storage.array
        item = base.dtype.itemsize
        # A dimension of size 0 or 1 never steps, so its stride (any int64 in the file) is irrelevant.
        strides = tuple(s * item if n > 1 else 0 for n, s in zip(self.size, self.stride))
        arr = np.lib.stride_tricks.as_strided(base[self.offset:], shape=self.size, strides=strides)
        if self.storage.bf16:
            arr = widen_bf16(arr)
        arr = cast_float(arr, dtype)
        return arr if arr.flags.c_contiguous else arr.copy()          # (ascontiguousarray would make 0-d 1-d)


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides, in elements, of a tensor of shape `size`."""
    strides, step = [], 1
    for d in reversed(size):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


class _Storage:
    """The raw bytes of `<top>/data/<key>`, viewed as the storage's element dtype."""

    __slots__ = ("array", "bf16")

    def __init__(self, array: np.ndarray, bf16: bool) -> None:
        self.array, self.bf16 = array, bf16

    def __setstate__(self, state: object) -> None:
        raise CheckpointError("data.pkl tries to set the state of a storage")


def _as_int_tuple(x: object, what: str) -> tuple[int, ...]:
    """A tensor's size or stride: at most 64 integers, each in [0, 2**63), checked before any arithmetic."""
    if not isinstance(x, (tuple, list)) or len(x) > 64:
        raise CheckpointError(f"data.pkl: tensor {what} must be a tuple of at most 64 integers, got {x!r}"[:200])
    return tuple(checked_int(v, f"tensor {what}", "data.pkl") for v in x)


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object = False, backward_hooks: object = None,
                       metadata: object = None) -> _Tensor:
    """Our `torch._utils._rebuild_tensor_v2`: check the view lies inside its storage, build no array yet."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("data.pkl: a tensor's storage is not a persistent storage reference")
    storage_offset = checked_int(storage_offset, "storage offset", "data.pkl")
    size, stride = _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"data.pkl: tensor size {size} and stride {stride} differ in length"[:200])
    numel = storage.array.shape[0]
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))   # largest index read
        if last >= numel:
            raise CheckpointError(
                f"data.pkl: tensor of size {size}, stride {stride}, offset {storage_offset} reads "
                f"past the end of its storage ({numel} elements)"[:300])
    elif storage_offset > numel:
        raise CheckpointError("data.pkl: empty tensor's offset lies past its storage")
    count = checked_numel(size, storage.array.dtype.itemsize, "tensor size", "data.pkl")
    if count > numel:                                 # e.g. stride 0 repeating one element 2**40 times
        raise CheckpointError(f"data.pkl: tensor of size {size} has more elements than its storage ({numel})"[:300])
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: object, requires_grad: object = False, backward_hooks: object = None) -> _Tensor:
    """Our `torch._utils._rebuild_parameter`: an `nn.Parameter` is just its tensor here."""
    if not isinstance(data, _Tensor):
        raise CheckpointError("data.pkl: a parameter does not wrap a tensor")
    return data


class _Callable:
    """What `find_class` hands out for a callable: it can be called (REDUCE) but not modified.

    Handing out the functions themselves would let a pickle's BUILD opcode set attributes on them,
    e.g. `_rebuild_tensor_v2.__defaults__`, changing this module for the rest of the process.
    """

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn: object) -> None:
        self.name, self.fn = name, fn

    def __call__(self, *args: object) -> object:
        return self.fn(*args)

    def __setstate__(self, state: object) -> None:
        raise CheckpointError(f"data.pkl tries to set attributes of {self.name}")


# (module, name) -> the object `find_class` returns. Nothing else is reachable from the pickle.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): _Callable("collections.OrderedDict", collections.OrderedDict),
    ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2", _rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Callable("torch._utils._rebuild_parameter", _rebuild_parameter),
    **{("torch", name): _StorageType(name, dt) for name, dt in TORCH_STORAGES.items()},
}

# Opcodes a state-dict pickle may use: data, containers, memo, GLOBAL/REDUCE/BUILD (gated by
# find_class) and BINPERSID (storages). Refused: INST/OBJ/NEWOBJ (instantiate classes directly),
# EXT* (the copyreg extension registry), text PERSID, sets and out-of-band buffers.
_ALLOWED_OPCODES = frozenset((
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE", "INT",
    "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT", "STRING",
    "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_LIST", "LIST", "APPEND", "APPENDS", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "GET",
    "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GLOBAL", "STACK_GLOBAL",
    "REDUCE", "BUILD", "BINPERSID",
))


# Limits of a state-dict pickle, checked before it runs. torch.save pushes about 25 values per tensor
# on the unpickler's stack, nested 4 deep (dict -> rebuild call -> argument tuple -> persistent id),
# in about 190 bytes: a BertForMaskedLM state dict of 76 tensors is a 14 kB data.pkl. A hostile
# pickle can make the unpickler build a million-deep tuple (hashing it as a dict key overflows the C
# stack: a crash no `try` can catch), a list of tens of millions of items (75 bytes of memory per
# byte of file) or integers of a million digits.
MAX_PICKLE_BYTES = 16 * 2 ** 20
MAX_PICKLE_OBJECTS = 500_000          # values pushed on the unpickler's stack: ~20,000 tensors
MAX_PICKLE_NESTING = 32               # containers inside containers
MAX_PICKLE_INT = 2 ** 63              # every integer of a state dict fits in int64

# How each allowed opcode changes the unpickler's stack, for the pre-scan (see `_PickleShape`).
_PUSH_SCALAR = frozenset((
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
    "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "GLOBAL"))
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


class _PickleShape:
    """A model of the unpickler's stack that tracks only each value's nesting depth (0 = not a container).

    Replaying the opcodes on it costs a few integers per value, so the limits above are checked
    before the real unpickler builds anything.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.stack: list[int] = []        # nesting depth of each value on the stack
        self.marks: list[int] = []        # stack heights at each MARK
        self.memo: dict[int, int] = {}    # memo index -> depth of the value stored there
        self.pushed = 0

    def push(self, depth: int, pos: int) -> None:
        self.pushed += 1
        if self.pushed > MAX_PICKLE_OBJECTS:
            raise CheckpointError(f"{self.where}: data.pkl builds more than {MAX_PICKLE_OBJECTS} objects "
                                  f"(at byte {pos}); a state dict needs about 25 per tensor")
        self.check_depth(depth, pos)
        self.stack.append(depth)

    def check_depth(self, depth: int, pos: int) -> None:
        if depth > MAX_PICKLE_NESTING:
            raise CheckpointError(
                f"{self.where}: data.pkl nests containers more than {MAX_PICKLE_NESTING} levels deep "
                f"(at byte {pos}); a state dict nests 4. Refused before unpickling: such a file "
                "can crash the interpreter.")

    def pop(self, n: int = 1) -> list[int]:
        floor = self.marks[-1] if self.marks else 0
        if len(self.stack) - n < floor:
            raise CheckpointError(f"{self.where}: malformed pickle (stack underflow)")
        out = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        return out

    def pop_mark(self) -> list[int]:
        if not self.marks:
            raise CheckpointError(f"{self.where}: malformed pickle (no MARK)")
        out = self.stack[self.marks[-1]:]
        del self.stack[self.marks.pop():]
        return out

    def add_to_top(self, items: list[int], pos: int) -> None:
        """APPEND(S), SETITEM(S), BUILD: the container on top now holds `items`."""
        if not self.stack:
            raise CheckpointError(f"{self.where}: malformed pickle (nothing to add to)")
        depth = max(self.stack[-1], 1 + max(items, default=0))
        self.check_depth(depth, pos)
        self.stack[-1] = depth

    def step(self, name: str, arg: object, pos: int) -> None:
        """Apply one opcode's effect on the stack."""
        if name in _PUSH_SCALAR:
            if type(arg) is int and not -MAX_PICKLE_INT <= arg < MAX_PICKLE_INT:
                raise CheckpointError(f"{self.where}: data.pkl holds a {arg.bit_length()}-bit integer at "
                                      f"byte {pos}; a state dict's sizes and offsets fit in 64 bits")
            self.push(0, pos)
        elif name in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT"):
            self.push(1, pos)
        elif name == "MARK":
            self.marks.append(len(self.stack))
        elif name in ("TUPLE", "LIST", "DICT"):
            self.push(1 + max(self.pop_mark(), default=0), pos)
        elif name in _TUPLE_N:
            self.push(1 + max(self.pop(_TUPLE_N[name])), pos)
        elif name == "APPEND":
            self.add_to_top(self.pop(1), pos)
        elif name == "SETITEM" or name == "BUILD":
            self.add_to_top(self.pop(2 if name == "SETITEM" else 1), pos)
        elif name in ("APPENDS", "SETITEMS"):
            self.add_to_top(self.pop_mark(), pos)
        elif name == "POP":
            if self.marks and self.marks[-1] == len(self.stack):
                self.marks.pop()
            else:
                self.pop(1)
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            top = self.pop(1)[0]
            self.stack.append(top)
            self.push(top, pos)
        elif name in ("STACK_GLOBAL", "REDUCE"):      # callable/args -> result; module/name -> global
            self.push(max(self.pop(2)), pos)
        elif name == "BINPERSID":
            self.pop(1)
            self.push(0, pos)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise CheckpointError(f"{self.where}: pickle memo index {arg!r} at byte {pos} is out of range")
            self.push(self.memo[arg], pos)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            # CPython's C unpickler grows its memo table to twice the largest index it is asked to
            # store, so `LONG_BINPUT 4000000000` alone would allocate tens of gigabytes. Real memo
            # indices count up from 0: we allow at most one past the entries stored so far.
            index = len(self.memo) if name == "MEMOIZE" else arg
            if not isinstance(index, int) or not 0 <= index <= len(self.memo) or not self.stack:
                raise CheckpointError(f"{self.where}: pickle memo index {arg!r} at byte {pos} is out of range")
            self.memo[index] = self.stack[-1]
        # PROTO, FRAME and STOP leave the stack alone.


def _prescan_pickle(data: bytes, where: str) -> None:
    """Walk the opcodes without executing them, refusing what a state dict never holds.

    Refused: opcodes outside `_ALLOWED_OPCODES`, globals outside the allow-list, memo indices out of
    range, and pickles beyond the limits above (size, objects, nesting depth, integer size).
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{where}: data.pkl is {len(data)} bytes, more than the {MAX_PICKLE_BYTES} a "
                              "state dict needs (about 190 bytes per tensor)")
    shape = _PickleShape(where)
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name not in _ALLOWED_OPCODES:
                raise CheckpointError(f"{where}: pickle opcode {op.name} at byte {pos} is not allowed "
                                      "in a state dict")
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                _find_allowed(module, name, where)
            shape.step(op.name, arg, pos)
            if op.name == "STOP":
                return
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 -- any error from a malformed stream means a bad file
        raise CheckpointError(f"{where}: malformed pickle ({type(e).__name__}: {e})"[:300]) from None
    raise CheckpointError(f"{where}: pickle has no STOP opcode (truncated?)")


def _find_allowed(module: str, name: str, where: str) -> object:
    try:
        return _ALLOWED_GLOBALS[(module, name)]
    except (KeyError, TypeError):
        raise CheckpointError(
            f"{where}: refusing to load global {module}.{name}: a state dict needs only torch's "
            "tensor-rebuild functions, storage types and collections.OrderedDict. The file may be "
            "malicious or not a plain state dict; load it with torch.load(weights_only=True) instead."
        ) from None


class _StateDictUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves globals through the allow-list and storages through the zip."""

    def __init__(self, data: bytes, storages: _ZipStorages) -> None:
        super().__init__(io.BytesIO(data))
        self.storages = storages

    def find_class(self, module: str, name: str) -> object:
        return _find_allowed(module, name, self.storages.where)

    def persistent_load(self, pid: object) -> _Storage:
        # torch.save writes ('storage', storage_type, key, location, numel) for every storage.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise CheckpointError(f"{self.storages.where}: unexpected persistent id {pid!r}"[:300])
        numel = checked_int(pid[4], "storage element count", self.storages.where)
        return self.storages.get(pid[2], pid[1], numel)


class _ZipStorages:
    """Storage files of a torch zip, each viewed (not copied) from a memory map of the whole file."""

    def __init__(self, path: str, zf: zipfile.ZipFile, prefix: str, big_endian: bool, verify_crc: bool,
                 mmap: bool) -> None:
        self.where, self.zf, self.prefix = path, zf, prefix
        self.big_endian, self.verify_crc = big_endian, verify_crc
        self.buf = file_bytes(path, mmap)                 # (file size,) uint8
        self.file_size = self.buf.shape[0]
        self.cache: dict[str, _Storage] = {}

    def get(self, key: str, stype: _StorageType, numel: int) -> _Storage:
        if key in self.cache:                             # two tensors sharing one storage
            if self.cache[key].array.shape[0] != numel:
                raise CheckpointError(f"{self.where}: storage {key!r} declared with two sizes")
            return self.cache[key]
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.where}: storage {name!r} is missing from the archive") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{self.where}: storage {name!r} is compressed; torch.save stores them raw")
        if info.file_size != numel * stype.dtype.itemsize or info.compress_size != info.file_size:
            raise CheckpointError(
                f"{self.where}: storage {name!r} holds {info.file_size} bytes, but the pickle declares "
                f"{numel} elements of {stype.name} ({numel * stype.dtype.itemsize} bytes)")
        start = self._data_start(info)
        raw = self.buf[start:start + info.file_size]
        if self.verify_crc and zlib.crc32(raw) != info.CRC:
            raise CheckpointError(f"{self.where}: storage {name!r} fails its CRC-32 check (corrupt file)")
        dtype = stype.dtype.newbyteorder(">") if self.big_endian and stype.dtype.itemsize > 1 else stype.dtype
        storage = _Storage(raw.view(dtype).view(np.ndarray), bf16=stype.name == "BFloat16Storage")
        self.cache[key] = storage
        return storage

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        """Offset of an entry's bytes: after its 30-byte local header, file name and extra field."""
        h = info.header_offset
        if not 0 <= h <= self.file_size - 30 or bytes(self.buf[h:h + 4]) != b"PK\x03\x04":
            raise CheckpointError(f"{self.where}: bad local zip header for {info.filename!r}")
        name_len, extra_len = struct.unpack("<HH", bytes(self.buf[h + 26:h + 30]))
        start = h + 30 + name_len + extra_len
        if start + info.file_size > self.file_size:
            raise CheckpointError(f"{self.where}: entry {info.filename!r} runs past the end of the file")
        return start


def load_torch_zip(path: str | os.PathLike, dtype: np.dtype | type | None = np.float32,
                   verify_crc: bool = True, mmap: bool = True) -> dict[str, np.ndarray]:
    """Read a `torch.save` zip checkpoint (e.g. `pytorch_model.bin`) without torch.

    Floating tensors are converted to `dtype` (None keeps the stored dtype; bfloat16 becomes float32);
    integer buffers such as `position_ids` keep theirs. Float32 tensors of a float32 file are views of
    a copy-on-write memory map (`mmap=False`: of an in-memory copy of the file; see `formats.common`).
    `verify_crc` checks each storage against the zip's CRC-32.
    """
    path = os.fspath(path)
    dtype = None if dtype is None else np.dtype(dtype)
    try:
        return _load_torch_zip(path, dtype, verify_crc, mmap)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 -- zipfile/struct/unpickling errors all mean a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch zip checkpoint "
                              f"({type(e).__name__}: {e})"[:400]) from None


def _load_torch_zip(path: str, dtype: np.dtype | None, verify_crc: bool, mmap: bool) -> dict[str, np.ndarray]:
    file_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if len(set(names)) != len(names):
            dup = sorted(n for n, k in collections.Counter(names).items() if k > 1)
            raise CheckpointError(f"{path}: the zip archive holds {dup[:3]} more than once; readers disagree "
                                  "on which copy counts (torch takes the first), so the file is refused"[:300])
        # The archive's top folder is named after the file torch.save was given; find it via data.pkl.
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one '<folder>/data.pkl' in the zip, found {len(pkls)}")
        prefix = pkls[0][: -len("data.pkl")]
        declared = zf.getinfo(pkls[0]).file_size
        if declared > MAX_PICKLE_BYTES:                   # refused before inflating it
            raise CheckpointError(f"{path}: data.pkl is {declared} bytes, more than the {MAX_PICKLE_BYTES} a "
                                  "state dict needs (about 190 bytes per tensor)")
        data = _read_member(zf, pkls[0], min(file_size, MAX_PICKLE_BYTES), path)
        big_endian = False
        if f"{prefix}byteorder" in zf.namelist():
            order = _read_member(zf, f"{prefix}byteorder", 16, path)
            if order not in (b"little", b"big"):
                raise CheckpointError(f"{path}: unknown byteorder {order!r}")
            big_endian = order == b"big"
        _prescan_pickle(data, path)
        storages = _ZipStorages(path, zf, prefix, big_endian, verify_crc, mmap)
        obj = _StateDictUnpickler(data, storages).load()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]                       # a training checkpoint wrapping its state dict
    if type(obj) not in (dict, collections.OrderedDict):
        raise CheckpointError(f"{path}: data.pkl holds a {type(obj).__name__}, not a state dict")
    # Converting float16 to float32 doubles the bytes and tied tensors share a storage, so a real file
    # never needs more than 4x its size in copies. Many tensors viewing one big storage would: refuse.
    budget = 4 * file_size
    out: dict[str, np.ndarray] = {}
    for name, value in dict.items(obj):               # dict.items: ignore any attribute set by BUILD
        if isinstance(name, str) and isinstance(value, _Tensor):
            budget -= value.copy_bytes(dtype)
            if budget < 0:
                raise CheckpointError(f"{path}: its tensors would need more than 4x the file's size in memory")
            out[name] = value.to_numpy(dtype)
    if not out:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    return out


def _read_member(zf: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    """Read a (small) zip member, refusing to inflate more than `limit` bytes (zip bombs)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise CheckpointError(f"{where}: {name!r} declares {info.file_size} bytes, more than the file holds")
    with zf.open(info) as f:
        data = f.read(limit + 1)                      # zipfile checks the CRC-32 when it reaches the end
    if len(data) > limit:
        raise CheckpointError(f"{where}: {name!r} inflates past {limit} bytes")
    return data



# --------------------------------------------------------------------------- writing
def _pickle_int(n: int) -> bytes:
    """BININT for 32-bit signed values, LONG1 (little-endian two's complement) beyond."""
    if -(2 ** 31) <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _pickle_str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_pickle_int(v) for v in values) + b"t"          # MARK ... TUPLE


_NUMPY_TO_STORAGE = {np.dtype(v).newbyteorder("="): k for k, v in TORCH_STORAGES.items() if k != "BFloat16Storage"}


def save_torch_zip(tensors: dict[str, np.ndarray], path: str | os.PathLike, top: str = "archive") -> None:
    """Write a state dict in torch.save's zip format, without torch (`torch.load(weights_only=True)` reads it).

    `data.pkl` is written opcode by opcode: a dict whose values are `_rebuild_tensor_v2` calls on
    persistent storages `('storage', torch.FloatStorage, key, 'cpu', numel)`, one storage per tensor.
    Storages are stored uncompressed and 64-byte aligned, so readers can memory-map them.
    """
    path = os.fspath(path)
    pkl = [b"\x80\x02}("]                                                   # PROTO 2, EMPTY_DICT, MARK
    arrays = []
    for key, (name, value) in enumerate(tensors.items()):
        a = np.asarray(value)
        a = a if a.flags.c_contiguous else a.copy()
        a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        storage = _NUMPY_TO_STORAGE.get(a.dtype.newbyteorder("="))
        if storage is None:
            raise TypeError(f"{name}: dtype {a.dtype} has no torch storage type")
        stride = _contiguous_strides(a.shape)
        pkl += [_pickle_str(name), b"ctorch._utils\n_rebuild_tensor_v2\n(",   # GLOBAL, MARK (args)
                b"(" + _pickle_str("storage") + f"ctorch\n{storage}\n".encode()  # persistent id tuple
                + _pickle_str(str(key)) + _pickle_str("cpu") + _pickle_int(a.size) + b"tQ",  # TUPLE BINPERSID
                _pickle_int(0), _pickle_ints(a.shape), _pickle_ints(stride),      # offset, size, stride
                b"\x89ccollections\nOrderedDict\n)Rt",   # requires_grad=False, OrderedDict() hooks; TUPLE
                b"R"]                                                      # REDUCE: call _rebuild_tensor_v2
        arrays.append((str(key), a))
    pkl.append(b"u.")                                                      # SETITEMS, STOP
    with atomic_open(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{top}/data.pkl", b"".join(pkl))
        zf.writestr(f"{top}/byteorder", b"little")
        for key, a in arrays:
            _write_aligned(zf, f"{top}/data/{key}", a)
        zf.writestr(f"{top}/version", b"3\n")


def _write_aligned(zf: zipfile.ZipFile, name: str, a: np.ndarray) -> None:
    """Store `a`'s bytes so that they start on a 64-byte boundary (padding in the local extra field)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = zf.fp.tell() + 30 + len(name.encode()) + 4                    # + 4: the extra field's header
    pad = -start % 64
    info.extra = struct.pack("<HH", 0x4650, pad) + b"\0" * pad            # an unknown id: readers skip it
    with zf.open(info, "w", force_zip64=a.nbytes > 0x7FFFFFFF) as f:
        f.write(a.reshape(-1).view(np.uint8).data)
