export interface StartOptions {
  /** Portal state file (JSON or YAML) to start with; default: the built-in demo portal. */
  fixture?: string | URL
  /** The crmchat binary; default `$CRMCHAT_BIN`, else `crmchat` on PATH. */
  binary?: string
  /** More `crmchat serve` arguments. */
  args?: string[]
  startupTimeoutMs?: number
  /** Make Node's global HTTPS agent trust the server's certificate (default true; undone by stop()). */
  trustCa?: boolean
}

export interface JournalEntry {
  id: number
  at: string
  method: string
  transport: 'json' | 'xml'
  http_method: string
  auth: { type: 'webhook' | 'oauth' | 'none', user_id?: number, webhook_id?: number, client_id?: string }
  params: Record<string, unknown>
  status: number
  error: string | null
  result: unknown
  duration_ms: number
  batch_id?: number | null
  fault?: number | null
}

export interface FaultOptions {
  httpStatus?: number
  delayMs?: number
  times?: number
  probability?: number
  webhookId?: number
  clientId?: string
}

export interface InstalledApp {
  access_token: string
  refresh_token: string
  expires_in: number
  member_id: string
  application_token: string
  client_endpoint: string
  server_endpoint: string
}

export declare class ControlError extends Error {
  status: number
  body: unknown
  error: string | null
  problems: string[]
  detail?: string
}

export declare class Control {
  constructor (baseUrl: string, token: string)
  baseUrl: string
  call (httpMethod: string, route: string, options?: { body?: unknown, query?: Record<string, unknown>, rawBody?: BodyInit, contentType?: string, text?: boolean }): Promise<any>
  state (options?: { detail?: 'structure' }): Promise<any>
  load (document: object | string | URL, options?: { replace?: boolean }): Promise<any>
  replaceState (document: object | string | URL): Promise<any>
  reset (): Promise<{ ok: true, took_ms: number }>
  snapshot (name: string): Promise<any>
  restore (name: string): Promise<any>
  snapshots (): Promise<Array<{ name: string, created: string, bytes: number }>>
  deleteSnapshot (name: string): Promise<any>
  requests (filters?: { method?: string, status?: number, error?: string, userId?: number, sinceId?: number, limit?: number }): Promise<JournalEntry[] & { total: number }>
  clearRequests (): Promise<any>
  fault (method?: string, error?: string | null, options?: FaultOptions): Promise<number>
  fault (rule: Record<string, unknown>): Promise<number>
  faults (): Promise<any[]>
  deleteFault (id: number): Promise<any>
  clearFaults (): Promise<any>
  advanceClock (seconds: number): Promise<{ now: string, offset_s: number }>
  setClock (when: string | Date): Promise<{ now: string, offset_s: number }>
  clock (): Promise<{ now: string, offset_s: number }>
  resetClock (): Promise<any>
  installApp (clientId: string, options?: { userId?: number, handler?: string | null }): Promise<InstalledApp>
  uninstallApp (clientId: string): Promise<any>
  events (filters?: { status?: 'pending' | 'delivered' | 'failed', event?: string, limit?: number }): Promise<any[]>
  redeliver (id: number): Promise<any>
  errors (): Promise<any>
  metrics (): Promise<string>
}

export interface Crmchat {
  /** `https://127.0.0.1:PORT/rest/USER/CODE/`: the portal's first webhook (null if it has none). */
  webhookUrl: string | null
  webhookToken: string | null
  /** The server's certificate (PEM text); `caCertPath` is its file. */
  caCert: string
  caCertPath: string
  baseUrl: string
  httpUrl: string
  domain: string
  oauthTokenUrl: string
  control: Control
  reset (): Promise<{ ok: true, took_ms: number }>
  stop (): Promise<void>
  pid: number
  log (): string
}

export declare function startCrmchat (options?: StartOptions): Promise<Crmchat>
export declare function findBinary (binary?: string): string
