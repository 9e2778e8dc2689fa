// @ts-check
/*
 * The queue's storage, in the extension's IndexedDB (only the extension's own pages and worker
 * can open it): one record per capture, so queueing one is one write whatever the queue
 * holds. `queue` is in capture order with a unique index on the capture's key, `delivered`
 * remembers the keys the server took (a capture seen again is not sent again), `refused` keeps
 * what the server refused by name, with its reason, until the person exports or clears it.
 */

/** @typedef {import("./capture.js").QueueRecord} QueueRecord */
/** @typedef {{ key: string, item: object, reason: string, at: number }} RefusedRecord */

const NAME = "memory-layer";
const VERSION = 1;

/** @type {Promise<IDBDatabase> | null} */
let opened = null;

function database() {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(NAME, VERSION);
      request.onupgradeneeded = () => {
        const db = request.result;
        db.createObjectStore("queue", { keyPath: "seq", autoIncrement: true }).createIndex("key", "key", { unique: true });
        db.createObjectStore("delivered", { keyPath: "key" }).createIndex("at", "at");
        db.createObjectStore("refused", { keyPath: "key" });
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    opened.catch(() => (opened = null));
  }
  return opened;
}

/**
 * Runs body in one transaction; resolves with what body returned once the transaction has
 * committed.
 * @template T
 * @param {string[]} stores
 * @param {IDBTransactionMode} mode
 * @param {(tx: IDBTransaction) => T} body
 * @returns {Promise<Awaited<T>>}
 */
async function transaction(stores, mode, body) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(stores, mode);
    /** @type {any} */
    let value;
    tx.oncomplete = async () => resolve(await value);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
    value = body(tx);
  });
}

/** @template T @param {IDBRequest<T>} request @returns {Promise<T>} */
const result = (request) =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });

/** Adds a capture unless it is queued or was delivered already; true when added. */
export function add(/** @type {QueueRecord} */ record) {
  return transaction(["queue", "delivered"], "readwrite", async (tx) => {
    if ((await result(tx.objectStore("delivered").getKey(record.key))) !== undefined) return false;
    if ((await result(tx.objectStore("queue").index("key").getKey(record.key))) !== undefined) return false;
    tx.objectStore("queue").add(record);
    return true;
  });
}

/** The oldest `limit` records. */
export function head(/** @type {number} */ limit) {
  return transaction(["queue"], "readonly", (tx) => result(tx.objectStore("queue").getAll(null, limit)));
}

export function count(/** @type {"queue" | "delivered" | "refused"} */ store) {
  return transaction([store], "readonly", (tx) => result(tx.objectStore(store).count()));
}

/** Removes the oldest record (a full queue); true if there was one. */
export function dropOldest() {
  return transaction(["queue"], "readwrite", async (tx) => {
    const cursor = await result(tx.objectStore("queue").openCursor());
    if (!cursor) return false;
    cursor.delete();
    return true;
  });
}

/**
 * What one answer of the server settles, in one write: records it took leave the queue for
 * `delivered`, records it refused move to `refused`, records partly sent remember how far.
 * @param {{ done: QueueRecord[], refused: Array<{ record: QueueRecord, reason: string }>, progressed: Array<{ record: QueueRecord, sent: number }> }} settled
 */
export function settle({ done, refused, progressed }) {
  const at = Date.now();
  return transaction(["queue", "delivered", "refused"], "readwrite", (tx) => {
    const queue = tx.objectStore("queue");
    for (const record of done) {
      queue.delete(/** @type {number} */ (record.seq));
      tx.objectStore("delivered").put({ key: record.key, at });
    }
    for (const { record, reason } of refused) {
      queue.delete(/** @type {number} */ (record.seq));
      tx.objectStore("refused").put({ key: record.key, item: record.item, reason, at });
    }
    for (const { record, sent } of progressed) queue.put({ ...record, sent });
  });
}

/** Forgets the oldest delivered keys beyond `keep`. */
export function forgetDelivered(/** @type {number} */ keep) {
  return transaction(["delivered"], "readwrite", async (tx) => {
    const store = tx.objectStore("delivered");
    let extra = (await result(store.count())) - keep;
    if (extra <= 0) return;
    const cursorRequest = store.index("at").openCursor();
    await new Promise((resolve, reject) => {
      cursorRequest.onsuccess = () => {
        const cursor = cursorRequest.result;
        if (!cursor || extra <= 0) return resolve(undefined);
        cursor.delete();
        extra -= 1;
        cursor.continue();
      };
      cursorRequest.onerror = () => reject(cursorRequest.error);
    });
  });
}

/** @returns {Promise<RefusedRecord[]>} */
export function refusedItems() {
  return transaction(["refused"], "readonly", (tx) => result(tx.objectStore("refused").getAll()));
}

export function clearRefused() {
  return transaction(["refused"], "readwrite", (tx) => {
    tx.objectStore("refused").clear();
  });
}
