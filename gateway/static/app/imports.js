// Turns an uploaded file into the items of POST /memories/batch: a ChatGPT or Claude
// conversations.json, or this server's own NDJSON export. Each message keeps its export id
// as its client message id, so importing the same file twice stores nothing twice.

const MAX_TEXT_CHARS = 50000;
const MAX_FIELD_CHARS = 512;

export class ImportError extends Error {}

export function itemsFromFile(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new ImportError("The file is empty.");
  if (trimmed.startsWith("[")) {
    let conversations;
    try {
      conversations = JSON.parse(trimmed);
    } catch {
      throw new ImportError("The file starts like JSON but is not valid JSON.");
    }
    return fromConversations(conversations);
  }
  return fromNdjson(trimmed);
}

function fromConversations(conversations) {
  const items = [];
  const skipped = [];
  conversations.forEach((conversation, n) => {
    let parsed;
    if (conversation && typeof conversation === "object" && "mapping" in conversation) {
      parsed = chatgpt(conversation);
    } else if (conversation && typeof conversation === "object" && "chat_messages" in conversation) {
      parsed = claude(conversation);
    } else {
      throw new ImportError(
        `Conversation ${n} is neither a ChatGPT one (mapping) nor a Claude one (chat_messages).`,
      );
    }
    items.push(...exchangeItems(parsed, skipped));
  });
  return { items, skipped };
}

function chatgpt(item) {
  const mapping = item.mapping || {};
  let nodeId = item.current_node || latestLeaf(mapping);
  const branch = [];
  const seen = new Set();
  // The branch the person saw last: from current_node up to the root.
  while (nodeId && mapping[nodeId] && !seen.has(nodeId)) {
    seen.add(nodeId);
    branch.push(mapping[nodeId]);
    nodeId = mapping[nodeId].parent;
  }
  const messages = [];
  for (const node of branch.reverse()) {
    const message = node.message || {};
    const role = (message.author || {}).role;
    const content = message.content || {};
    if (role !== "user" && role !== "assistant") continue;
    if (content.content_type !== "text" && content.content_type !== "multimodal_text") continue;
    if ((message.metadata || {}).is_visually_hidden_from_conversation) continue;
    const text = (content.parts || []).filter((p) => typeof p === "string").join("\n").trim();
    if (text) {
      messages.push({
        id: String(message.id || node.id),
        role,
        text,
        createdAt: typeof message.create_time === "number" && message.create_time > 0
          ? new Date(message.create_time * 1000).toISOString() : null,
      });
    }
  }
  return {
    id: String(item.conversation_id || item.id || ""),
    title: String(item.title || ""),
    provider: "chatgpt",
    messages,
  };
}

function latestLeaf(mapping) {
  const leaves = Object.values(mapping).filter((n) => !(n.children || []).length);
  if (!leaves.length) return null;
  const time = (n) => (n.message || {}).create_time || 0;
  return leaves.reduce((a, b) => (time(b) > time(a) ? b : a)).id;
}

function claude(item) {
  const messages = [];
  for (const message of item.chat_messages || []) {
    const role = { human: "user", assistant: "assistant" }[message.sender];
    const text = (message.text || (message.content || [])
      .filter((part) => part && part.type === "text")
      .map((part) => part.text || "")
      .join("\n")).trim();
    if (role && text) {
      const created = Date.parse(message.created_at);
      messages.push({
        id: String(message.uuid),
        role,
        text,
        createdAt: Number.isNaN(created) ? null : new Date(created).toISOString(),
      });
    }
  }
  return { id: String(item.uuid || ""), title: String(item.name || ""), provider: "claude", messages };
}

// Each user message is a prompt; the assistant messages after it, joined, are its answer.
function exchangeItems(conversation, skipped) {
  const items = [];
  let prompt = null;
  let answer = [];
  const metadata = () => {
    const entries = { imported_from: `${conversation.provider} export` };
    if (conversation.title) entries.conversation_title = conversation.title.slice(0, MAX_FIELD_CHARS);
    return entries;
  };
  const close = () => {
    if (!prompt) return;
    if (prompt.text.length > MAX_TEXT_CHARS) {
      skipped.push(`a prompt over ${MAX_TEXT_CHARS} characters`);
      return;
    }
    items.push(withTime({
      prompt: prompt.text,
      provider: conversation.provider,
      conversation_id: conversation.id.slice(0, MAX_FIELD_CHARS),
      message_id: prompt.id.slice(0, MAX_FIELD_CHARS),
      metadata: metadata(prompt),
    }, prompt.createdAt));
    if (!answer.length) return;
    const text = answer.map((m) => m.text).join("\n\n");
    if (text.length > MAX_TEXT_CHARS) {
      skipped.push(`an answer over ${MAX_TEXT_CHARS} characters`);
      return;
    }
    items.push(withTime({
      response: text,
      message_id: prompt.id.slice(0, MAX_FIELD_CHARS),
      response_message_id: answer[0].id.slice(0, MAX_FIELD_CHARS),
      provider: conversation.provider,
      conversation_id: conversation.id.slice(0, MAX_FIELD_CHARS),
      metadata: metadata(answer[0]),
    }, answer[0].createdAt));
  };
  for (const message of conversation.messages) {
    if (message.role === "user") {
      close();
      prompt = message;
      answer = [];
    } else if (prompt) {
      answer.push(message);
    }
  }
  close();
  return items;
}

function withTime(item, createdAt) {
  if (createdAt) item.created_at = createdAt;
  return item;
}

// Our own export: one memory per line, an answer possibly before its prompt, so prompts go
// first. An answer names its prompt by the prompt's client message id, which holds in any
// account; a memory without one brings its old id, kept if it is free.
function fromNdjson(text) {
  const memories = [];
  text.split("\n").forEach((line, n) => {
    if (!line.trim()) return;
    let memory;
    try {
      memory = JSON.parse(line);
    } catch {
      throw new ImportError(`Line ${n + 1} is not JSON; expected an NDJSON export.`);
    }
    if (!memory || typeof memory.text !== "string" || !["prompt", "response"].includes(memory.kind)) {
      throw new ImportError(`Line ${n + 1} is not a memory of an NDJSON export.`);
    }
    memories.push(memory);
  });
  const items = [];
  const skipped = [];
  const promptMessageIds = new Map();
  const exported = (memory) => {
    const item = { [memory.kind === "prompt" ? "prompt" : "response"]: memory.text };
    for (const name of ["provider", "conversation_id", "url"]) {
      if (memory[name]) item[name] = memory[name];
    }
    if (memory.metadata && Object.keys(memory.metadata).length) item.metadata = memory.metadata;
    if (typeof memory.created_at === "string") item.created_at = memory.created_at;
    if (memory.message_id) {
      item[memory.kind === "prompt" ? "message_id" : "response_message_id"] = memory.message_id;
    } else if (typeof memory.id === "string") {
      item.id = memory.id;
    }
    return item;
  };
  for (const memory of memories) {
    if (memory.kind !== "prompt") continue;
    const item = exported(memory);
    if (item.message_id) promptMessageIds.set(memory.id, item.message_id);
    items.push(item);
  }
  for (const memory of memories) {
    if (memory.kind !== "response") continue;
    if (!memory.prompt_id) {
      skipped.push("an answer whose prompt is not in the export");
      continue;
    }
    const item = exported(memory);
    if (promptMessageIds.has(memory.prompt_id)) item.message_id = promptMessageIds.get(memory.prompt_id);
    else item.prompt_id = memory.prompt_id;
    items.push(item);
  }
  return { items, skipped };
}
