// MongoDB roles and users of the RCM services. Run once per deployment, as an
// administrator, with mongosh:
//
//   mongosh "$ADMIN_URI" --file deploy/mongo/roles.js
//
// with RCM_CAMPAIGN_PASSWORD, RCM_COMPLIANCE_PASSWORD and RCM_FEED_PASSWORD
// in the environment. Indexes are created here too, so that the compliance
// service needs no index privilege (it runs with
// RCM_MONGODB_CREATE_INDEXES=false).

const admin = db.getSiblingDB("admin");

function ensureRole(name, privileges) {
  if (admin.getRole(name) === null) {
    admin.createRole({ role: name, privileges: privileges, roles: [] });
  } else {
    admin.updateRole(name, { privileges: privileges, roles: [] });
  }
}

function ensureUser(name, password, role) {
  if (admin.getUser(name) === null) {
    admin.createUser({ user: name, pwd: password, roles: [{ role: role, db: "admin" }] });
  } else {
    admin.updateUser(name, { pwd: password, roles: [{ role: role, db: "admin" }] });
  }
}

// The compliance log is insert-only: its entries may be inserted and read,
// never updated or deleted. The head hints (the furthest seq each account
// reached and its Merkle tree's size, kept apart from the entries) are
// upserted. The tree's stored hashes are insert-only too; tree_sizes held
// the size hints before they moved into entry_heads, and is only read.
ensureRole("rcmCompliance", [
  { resource: { db: "rcm_compliance", collection: "entries" }, actions: ["find", "insert"] },
  { resource: { db: "rcm_compliance", collection: "entry_heads" }, actions: ["find", "insert", "update"] },
  { resource: { db: "rcm_compliance", collection: "tree_hashes" }, actions: ["find", "insert"] },
  { resource: { db: "rcm_compliance", collection: "tree_sizes" }, actions: ["find"] },
  // Signed checkpoints and their cosignatures are insert-only too; the
  // hint of each account's latest checkpoint is upserted.
  { resource: { db: "rcm_compliance", collection: "checkpoints" }, actions: ["find", "insert"] },
  { resource: { db: "rcm_compliance", collection: "checkpoint_cosignatures" }, actions: ["find", "insert"] },
  { resource: { db: "rcm_compliance", collection: "checkpoint_heads" }, actions: ["find", "insert", "update"] },
]);

// Each document's record changes in place (one write per command): the
// document, its consent, its campaigns, its contact attempts, its outbox.
ensureRole("rcmCampaign", [
  // Campaigns written before their fixed fields moved into the document's
  // record are still read; nothing writes this collection any more.
  { resource: { db: "rcm_campaign", collection: "campaigns" }, actions: ["find"] },
  { resource: { db: "rcm_campaign", collection: "documents" }, actions: ["find", "insert", "update", "createIndex"] },
  // Idempotency-Key claims: taken, answered, released after a failure, and
  // swept after 24 hours.
  { resource: { db: "rcm_campaign", collection: "idempotency" }, actions: ["find", "insert", "update", "remove"] },
  // The nonces of the gateway's signed principals, one insert per command
  // (unique _id: a replayed signature fails on every replica), swept by
  // _id once they can no longer verify.
  { resource: { db: "rcm_campaign", collection: "principal_nonces" }, actions: ["find", "insert", "remove"] },
]);

// The activity feed is insert-only as well.
ensureRole("rcmFeed", [
  { resource: { db: "rcm_feed", collection: "items" }, actions: ["find", "insert", "createIndex"] },
  { resource: { db: "rcm_feed", collection: "item_heads" }, actions: ["find", "insert", "update"] },
  // The used stream tickets: claimed by insert under a unique _id, swept by
  // _id once they are long expired.
  { resource: { db: "rcm_feed", collection: "stream_tickets" }, actions: ["find", "insert", "remove"] },
]);

// Read-only access for exports (rcmctl log export) and auditors.
ensureRole("rcmComplianceReader", [
  { resource: { db: "rcm_compliance", collection: "entries" }, actions: ["find"] },
  { resource: { db: "rcm_compliance", collection: "entry_heads" }, actions: ["find"] },
  { resource: { db: "rcm_compliance", collection: "tree_hashes" }, actions: ["find"] },
  { resource: { db: "rcm_compliance", collection: "tree_sizes" }, actions: ["find"] },
  { resource: { db: "rcm_compliance", collection: "checkpoints" }, actions: ["find"] },
  { resource: { db: "rcm_compliance", collection: "checkpoint_cosignatures" }, actions: ["find"] },
  { resource: { db: "rcm_compliance", collection: "checkpoint_heads" }, actions: ["find"] },
]);

const compliance = db.getSiblingDB("rcm_compliance");
compliance.entries.createIndex({ accountId: 1, eventId: 1 }, { unique: true });
compliance.entries.createIndex({ accountId: 1, seq: 1 }, { unique: true });
compliance.checkpoints.createIndex({ accountId: 1, size: 1 }, { unique: true });

ensureUser("rcm-campaign", process.env.RCM_CAMPAIGN_PASSWORD, "rcmCampaign");
ensureUser("rcm-compliance", process.env.RCM_COMPLIANCE_PASSWORD, "rcmCompliance");
ensureUser("rcm-feed", process.env.RCM_FEED_PASSWORD, "rcmFeed");
