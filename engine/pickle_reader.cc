#include "engine/pickle_reader.h"

#include <cstring>
#include <map>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace bms {
namespace {

// The Python values a torch state-dict pickle can build (everything else is rejected).
struct Value;
using Ref = std::shared_ptr<Value>;

enum class Kind {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,
  kTuple,
  kList,
  kDict,
  kGlobal,
  kStorage,
  kTensor
};

struct Value {
  Kind kind = Kind::kNone;
  int64_t i = 0;                             // kBool, kInt
  double f = 0;                              // kFloat
  std::string s;                             // kString; kGlobal: "module name"
  std::vector<Ref> items;                    // kTuple, kList
  std::vector<std::pair<Ref, Ref>> entries;  // kDict (insertion order)
  PickledTensor tensor;                      // kStorage (key, dtype, numel), kTensor
};

// Every Value made during one parse, so a hostile pickle's reference cycles (a dict or list
// that holds itself, through the memo) can be broken when the parse ends instead of leaking.
thread_local std::vector<std::weak_ptr<Value>>* made_values = nullptr;

Ref Make(Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  if (made_values != nullptr) made_values->push_back(v);
  return v;
}

// Registers the Values of one parse; on destruction empties every container among them.
class CycleBreaker {
 public:
  CycleBreaker() { made_values = &made_; }
  ~CycleBreaker() {
    made_values = nullptr;
    for (const std::weak_ptr<Value>& w : made_) {
      if (Ref v = w.lock()) {
        v->items.clear();
        v->entries.clear();
      }
    }
  }

 private:
  std::vector<std::weak_ptr<Value>> made_;
};

constexpr const char* kRebuildTensor = "torch._utils _rebuild_tensor_v2";
constexpr const char* kRebuildParameter = "torch._utils _rebuild_parameter";
constexpr const char* kOrderedDict = "collections OrderedDict";

bool StorageDType(const std::string& global, DType* out) {
  if (global == "torch FloatStorage")
    *out = DType::kF32;
  else if (global == "torch BFloat16Storage")
    *out = DType::kBF16;
  else if (global == "torch HalfStorage")
    *out = DType::kF16;
  else
    return false;
  return true;
}

bool AllowedGlobal(const std::string& g) {
  DType unused;
  return g == kRebuildTensor || g == kRebuildParameter || g == kOrderedDict ||
         StorageDType(g, &unused);
}

class Unpickler {
 public:
  explicit Unpickler(std::string_view in) : in_(in) {}

  absl::StatusOr<Ref> Run() {
    while (true) {
      if (pos_ >= in_.size()) return Err("ends without STOP (truncated)");
      uint8_t op = static_cast<uint8_t>(in_[pos_++]);
      if (op == '.') {  // STOP
        if (stack_.size() != 1) return Err("STOP with a malformed stack");
        return stack_.back();
      }
      if (absl::Status s = Step(op); !s.ok()) return s;
    }
  }

 private:
  absl::Status Err(const std::string& why) const {
    return absl::InvalidArgumentError(absl::StrCat("data.pkl: ", why, " (at byte ", pos_, ")"));
  }

  absl::Status Need(size_t n) const {
    if (n > in_.size() - pos_) return Err("truncated");
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> ReadLE(int n) {
    if (absl::Status s = Need(n); !s.ok()) return s;
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(in_[pos_ + k]);
    pos_ += n;
    return v;
  }
  absl::StatusOr<std::string> ReadBytes(uint64_t n) {
    if (absl::Status s = Need(n); !s.ok()) return s;
    std::string out(in_.substr(pos_, n));
    pos_ += n;
    return out;
  }
  absl::StatusOr<std::string> ReadLine() {
    size_t nl = in_.find('\n', pos_);
    if (nl == std::string_view::npos) return Err("truncated GLOBAL");
    std::string out(in_.substr(pos_, nl - pos_));
    pos_ = nl + 1;
    return out;
  }
  absl::StatusOr<Ref> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) {
      return Err("stack underflow");
    }
    Ref v = stack_.back();
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<std::vector<Ref>> PopToMark() {
    if (marks_.empty()) return Err("no MARK");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Ref> out(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return out;
  }
  absl::Status Push(Ref v) {
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::Status PushTuple(std::vector<Ref> items) {
    Ref t = Make(Kind::kTuple);
    t->items = std::move(items);
    return Push(t);
  }
  absl::Status PushInt(int64_t v, Kind k = Kind::kInt) {
    Ref r = Make(k);
    r->i = v;
    return Push(r);
  }
  absl::Status PushString(absl::StatusOr<std::string> s) {
    if (!s.ok()) return s.status();
    Ref r = Make(Kind::kString);
    r->s = *std::move(s);
    return Push(r);
  }
  absl::Status PushGlobal(const std::string& module, const std::string& name) {
    std::string g = absl::StrCat(module, " ", name);
    if (!AllowedGlobal(g)) return Err(absl::StrCat("pickle GLOBAL '", g, "' is not allowed"));
    Ref r = Make(Kind::kGlobal);
    r->s = g;
    return Push(r);
  }
  absl::Status Memo(uint64_t idx) {
    if (stack_.empty()) return Err("memo of an empty stack");
    if (idx > (1u << 30)) return Err("memo index too large");
    memo_[idx] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) return Err(absl::StrCat("memo key ", idx, " missing"));
    return Push(it->second);
  }
  absl::Status SetItems(const std::vector<Ref>& kv) {
    if (kv.size() % 2 != 0) return Err("odd number of items for SETITEMS");
    absl::StatusOr<Ref> d = Pop();
    if (!d.ok()) return d.status();
    if ((*d)->kind != Kind::kDict) return Err("SETITEM(S) on a non-dict");
    for (size_t k = 0; k < kv.size(); k += 2) (*d)->entries.push_back({kv[k], kv[k + 1]});
    return Push(*d);
  }
  absl::Status Appends(const std::vector<Ref>& items) {
    absl::StatusOr<Ref> l = Pop();
    if (!l.ok()) return l.status();
    if ((*l)->kind != Kind::kList) return Err("APPEND(S) on a non-list");
    for (const Ref& v : items) (*l)->items.push_back(v);
    return Push(*l);
  }

  absl::Status Step(uint8_t op);
  absl::StatusOr<Ref> Reduce(const Value& callable, const Value& args);
  absl::StatusOr<Ref> PersistentLoad(const Value& pid);

  std::string_view in_;
  size_t pos_ = 0;
  std::vector<Ref> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, Ref> memo_;
};

absl::Status Unpickler::Step(uint8_t op) {
  switch (op) {
    case 0x80:
      return ReadLE(1).status();  // PROTO
    case 0x95:
      return ReadLE(8).status();  // FRAME
    case '(':
      marks_.push_back(stack_.size());
      return absl::OkStatus();  // MARK
    case '}':
      return Push(Make(Kind::kDict));  // EMPTY_DICT
    case ']':
      return Push(Make(Kind::kList));  // EMPTY_LIST
    case ')':
      return PushTuple({});  // EMPTY_TUPLE
    case 'N':
      return Push(Make(Kind::kNone));  // NONE
    case 0x88:
      return PushInt(1, Kind::kBool);  // NEWTRUE
    case 0x89:
      return PushInt(0, Kind::kBool);  // NEWFALSE
    case 'K': {                        // BININT1
      auto v = ReadLE(1);
      return v.ok() ? PushInt(static_cast<int64_t>(*v)) : v.status();
    }
    case 'M': {  // BININT2
      auto v = ReadLE(2);
      return v.ok() ? PushInt(static_cast<int64_t>(*v)) : v.status();
    }
    case 'J': {  // BININT (signed 32)
      auto v = ReadLE(4);
      return v.ok() ? PushInt(static_cast<int32_t>(static_cast<uint32_t>(*v))) : v.status();
    }
    case 0x8a: {  // LONG1
      auto n = ReadLE(1);
      if (!n.ok()) return n.status();
      if (*n > 8) return Err("LONG1 integer wider than 64 bits");
      if (*n == 0) return PushInt(0);
      auto v = ReadLE(static_cast<int>(*n));
      if (!v.ok()) return v.status();
      uint64_t u = *v;
      if (*n < 8 && (u >> (8 * *n - 1)) & 1) u |= ~0ull << (8 * *n);  // sign-extend
      return PushInt(static_cast<int64_t>(u));
    }
    case 'G': {  // BINFLOAT (big-endian)
      if (absl::Status s = Need(8); !s.ok()) return s;
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(in_[pos_ + k]);
      pos_ += 8;
      Ref r = Make(Kind::kFloat);
      std::memcpy(&r->f, &bits, 8);
      return Push(r);
    }
    case 'X': {  // BINUNICODE
      auto n = ReadLE(4);
      return n.ok() ? PushString(ReadBytes(*n)) : n.status();
    }
    case 0x8c: {  // SHORT_BINUNICODE
      auto n = ReadLE(1);
      return n.ok() ? PushString(ReadBytes(*n)) : n.status();
    }
    case 0x8d: {  // BINUNICODE8
      auto n = ReadLE(8);
      return n.ok() ? PushString(ReadBytes(*n)) : n.status();
    }
    case 'q': {  // BINPUT
      auto n = ReadLE(1);
      return n.ok() ? Memo(*n) : n.status();
    }
    case 'r': {  // LONG_BINPUT
      auto n = ReadLE(4);
      return n.ok() ? Memo(*n) : n.status();
    }
    case 0x94:
      return Memo(memo_.size());  // MEMOIZE
    case 'h': {                   // BINGET
      auto n = ReadLE(1);
      return n.ok() ? Get(*n) : n.status();
    }
    case 'j': {  // LONG_BINGET
      auto n = ReadLE(4);
      return n.ok() ? Get(*n) : n.status();
    }
    case 't': {  // TUPLE
      auto items = PopToMark();
      return items.ok() ? PushTuple(*std::move(items)) : items.status();
    }
    case 0x85:
    case 0x86:
    case 0x87: {  // TUPLE1..3
      size_t n = op - 0x84;
      std::vector<Ref> items(n);
      for (size_t k = n; k-- > 0;) {
        auto v = Pop();
        if (!v.ok()) return v.status();
        items[k] = *v;
      }
      return PushTuple(std::move(items));
    }
    case 'c': {  // GLOBAL
      auto module = ReadLine();
      if (!module.ok()) return module.status();
      auto name = ReadLine();
      if (!name.ok()) return name.status();
      return PushGlobal(*module, *name);
    }
    case 0x93: {  // STACK_GLOBAL
      auto name = Pop();
      if (!name.ok()) return name.status();
      auto module = Pop();
      if (!module.ok()) return module.status();
      if ((*name)->kind != Kind::kString || (*module)->kind != Kind::kString) {
        return Err("STACK_GLOBAL needs two strings");
      }
      return PushGlobal((*module)->s, (*name)->s);
    }
    case 'R': {  // REDUCE
      auto args = Pop();
      if (!args.ok()) return args.status();
      auto callable = Pop();
      if (!callable.ok()) return callable.status();
      auto r = Reduce(**callable, **args);
      return r.ok() ? Push(*r) : r.status();
    }
    case 'Q': {  // BINPERSID
      auto pid = Pop();
      if (!pid.ok()) return pid.status();
      auto r = PersistentLoad(**pid);
      return r.ok() ? Push(*r) : r.status();
    }
    case 's': {  // SETITEM
      auto v = Pop();
      if (!v.ok()) return v.status();
      auto k = Pop();
      if (!k.ok()) return k.status();
      return SetItems({*k, *v});
    }
    case 'u': {  // SETITEMS
      auto kv = PopToMark();
      return kv.ok() ? SetItems(*kv) : kv.status();
    }
    case 'a': {  // APPEND
      auto v = Pop();
      return v.ok() ? Appends({*v}) : v.status();
    }
    case 'e': {  // APPENDS
      auto items = PopToMark();
      return items.ok() ? Appends(*items) : items.status();
    }
    case 'b': {  // BUILD
      // Only an OrderedDict's attribute state (torch's `_metadata`) is accepted; it is dropped.
      auto state = Pop();
      if (!state.ok()) return state.status();
      if (stack_.empty() || stack_.back()->kind != Kind::kDict) {
        return Err("BUILD is only supported on dicts");
      }
      return absl::OkStatus();
    }
    default:
      return Err(absl::StrFormat("unsupported pickle opcode 0x%02x", op));
  }
}

absl::StatusOr<Ref> Unpickler::PersistentLoad(const Value& pid) {
  // torch: ('storage', <StorageType GLOBAL>, key: str, location: str, numel: int)
  if (pid.kind != Kind::kTuple || pid.items.size() != 5 || pid.items[0]->kind != Kind::kString ||
      pid.items[0]->s != "storage" || pid.items[1]->kind != Kind::kGlobal ||
      pid.items[2]->kind != Kind::kString || pid.items[4]->kind != Kind::kInt) {
    return Err("unsupported persistent id (expected a torch storage reference)");
  }
  Ref r = Make(Kind::kStorage);
  if (!StorageDType(pid.items[1]->s, &r->tensor.dtype)) {
    return Err(absl::StrCat("storage type '", pid.items[1]->s, "' is not supported"));
  }
  r->tensor.storage_key = pid.items[2]->s;
  r->tensor.storage_numel = pid.items[4]->i;
  if (r->tensor.storage_numel < 0) return Err("negative storage size");
  return r;
}

absl::StatusOr<Ref> Unpickler::Reduce(const Value& callable, const Value& args) {
  if (callable.kind != Kind::kGlobal || args.kind != Kind::kTuple) {
    return Err("REDUCE needs a GLOBAL and an argument tuple");
  }
  const std::vector<Ref>& a = args.items;
  if (callable.s == kOrderedDict) {
    if (!a.empty()) return Err("OrderedDict with constructor arguments is not supported");
    return Make(Kind::kDict);
  }
  if (callable.s == kRebuildParameter) {
    if (a.size() < 1 || a[0]->kind != Kind::kTensor) return Err("bad _rebuild_parameter arguments");
    return a[0];
  }
  if (callable.s == kRebuildTensor) {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    auto int_tuple = [](const Ref& v, std::vector<int64_t>* out) {
      if (v->kind != Kind::kTuple) return false;
      for (const Ref& x : v->items) {
        if (x->kind != Kind::kInt) return false;
        out->push_back(x->i);
      }
      return true;
    };
    Ref t = Make(Kind::kTensor);
    if (a.size() < 4 || a[0]->kind != Kind::kStorage || a[1]->kind != Kind::kInt ||
        !int_tuple(a[2], &t->tensor.shape) || !int_tuple(a[3], &t->tensor.stride) ||
        t->tensor.shape.size() != t->tensor.stride.size()) {
      return Err("bad _rebuild_tensor_v2 arguments");
    }
    PickledTensor& pt = t->tensor;
    const PickledTensor& st = a[0]->tensor;
    pt.storage_key = st.storage_key;
    pt.dtype = st.dtype;
    pt.storage_numel = st.storage_numel;
    pt.storage_offset = a[1]->i;
    return t;
  }
  return Err(absl::StrCat("REDUCE of '", callable.s, "' is not supported"));
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, PickledTensor>>> ParseTorchStateDict(
    std::string_view pickle) {
  CycleBreaker cycle_breaker;  // declared first: runs after the parse's values are released
  Unpickler u(pickle);
  absl::StatusOr<Ref> top = u.Run();
  if (!top.ok()) return top.status();
  const Value* dict = top->get();
  if (dict->kind != Kind::kDict) {
    return absl::InvalidArgumentError("data.pkl: the checkpoint is not a dict of tensors");
  }
  for (const auto& [k, v] : dict->entries) {
    if (k->kind == Kind::kString && k->s == "model" && v->kind == Kind::kDict) {
      dict = v.get();
      break;
    }
  }
  std::vector<std::pair<std::string, PickledTensor>> out;
  for (const auto& [k, v] : dict->entries) {
    if (k->kind != Kind::kString) {
      return absl::InvalidArgumentError("data.pkl: state dict has a non-string key");
    }
    if (v->kind == Kind::kTensor) out.push_back({k->s, v->tensor});
  }
  return out;
}

}  // namespace bms
