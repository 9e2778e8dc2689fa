// @ts-check
/*
 * The messages between the content scripts and the service worker: every one the worker
 * answers, with what it answers. The worker takes the site from the browser's `sender` (the
 * tab's URL), never from a message, so no message names its site.
 */

/** @typedef {"chatgpt" | "claude" | "gemini" | "perplexity"} SiteId */
/** @typedef {"auto" | "suggest" | "off"} InjectMode */

/**
 * A prompt as typed; `message_id` is fixed when its submit is seen (or is the site's own id).
 * @typedef {object} PromptCapture
 * @property {string} prompt
 * @property {string} message_id
 * @property {string | null} conversation_id
 * @property {string} url
 */

/**
 * An answer once finished, linked to its prompt by the prompt's `message_id`.
 * @typedef {object} ResponseCapture
 * @property {string} response
 * @property {string} message_id
 * @property {string} response_message_id
 * @property {string | null} conversation_id
 * @property {string} url
 */

/** @typedef {PromptCapture | ResponseCapture} Capture */

/**
 * A capture as queued: the content script's fields, the provider the worker read from
 * `sender`, and the browser's time zone when it was queued.
 * @typedef {Capture & { provider: SiteId, time_zone?: string }} QueuedCapture
 */

/**
 * Content script → worker.
 * @typedef {{ type: "hello" }} HelloMessage              answers SiteSettings
 * @typedef {{ type: "health", ok: boolean, reason: string }} HealthMessage   answers true
 * @typedef {{ type: "capture", item: Capture }} CaptureMessage   answers whether it was queued
 * @typedef {{ type: "context", prompt: string }} ContextMessage   answers ContextAnswer
 * @typedef {{ type: "injected", memories: InjectedMemory[] }} InjectedMessage   answers true
 * @typedef {HelloMessage | HealthMessage | CaptureMessage | ContextMessage | InjectedMessage} ContentMessage
 */

/**
 * @typedef {object} SiteSettings
 * @property {boolean} capture
 * @property {InjectMode} inject
 * @property {boolean} paused
 * @property {number} budgetMs
 */

/** @typedef {{ id: string, text: string }} InjectedMemory */

/**
 * @typedef {object} ContextAnswer
 * @property {string} context   the block to put above the prompt; "" for none
 * @property {Array<InjectedMemory & { score: number, provider: string }>} memories
 */

/** The content script's message types, as the worker dispatches them. */
export const CONTENT_MESSAGES = Object.freeze(["hello", "health", "capture", "context", "injected"]);

export {};
