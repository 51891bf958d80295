// muster-test-corrupt-kv <data-dir> <key> <new value>: a test-only tool
// that alters a stopped member's store behind Raft's back, as a bad disk or
// a bug would -- the corruption checks' tests use it (test_corruption.py).
//
// It rewrites the value of the newest revision record of <key> in
// <data-dir>/member/db (node/storage/db.h's layout), leaving its revision,
// version and every other record alone, so the member opens normally and
// serves the altered value; only a hash of its store tells.  The member
// must be stopped (LevelDB's lock refuses a second opener).  Prints the
// revision it altered; exits 1 when the key has no live record.
#include <leveldb/db.h>
#include <leveldb/iterator.h>

#include <iostream>
#include <memory>
#include <string>

#include "node/storage/db.h"
#include "node/storage/pb.h"

int main(int argc, char** argv) {
  using namespace muster;
  if (argc != 4) {
    std::cerr << "usage: muster-test-corrupt-kv <data-dir> <key> <new value>\n";
    return 2;
  }
  const std::string path = storage::Database::live_path(std::string(argv[1]) + "/member");
  const std::string key = argv[2], value = argv[3];
  leveldb::Options o;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(o, path, &raw);
  if (!s.ok()) {
    std::cerr << "cannot open " << path << ": " << s.ToString() << "\n";
    return 1;
  }
  std::unique_ptr<leveldb::DB> db(raw);
  std::unique_ptr<leveldb::Iterator> it(db->NewIterator(leveldb::ReadOptions()));
  std::string found_key;
  pb::KeyValue found;
  for (it->Seek(std::string(1, storage::keys::kRevision));
       it->Valid() && it->key().size() == 17 && it->key()[0] == storage::keys::kRevision;
       it->Next()) {
    pb::KeyValue kv;
    if (!kv.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) continue;
    if (kv.key() != key) continue;
    found_key = it->key().ToString();  // revision order: the last one is the newest
    found = kv;
  }
  if (found_key.empty() || found.version() == 0) {
    std::cerr << "no live record of key " << key << " in " << path << "\n";
    return 1;
  }
  found.set_value(value);
  leveldb::WriteOptions w;
  w.sync = true;
  s = db->Put(w, found_key, found.SerializeAsString());
  if (!s.ok()) {
    std::cerr << "write failed: " << s.ToString() << "\n";
    return 1;
  }
  std::cout << found.mod_revision() << "\n";
  return 0;
}
