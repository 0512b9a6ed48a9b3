// A human player (docs/contract.md §6): one iteration = one Socket.IO session (k6/ws, blocking)
// that plays games until game.gamesPerSession are done. Matchmaking over HTTP + lobby events,
// moves with player_move_by_id from validMoves, move and AI latency from game_state events.
// Every wait is bounded; the ±1 concurrency deltas are always closed when a started game is left.
import { sleep } from 'k6';
import exec from 'k6/execution';
import ws from 'k6/ws';
import { seated, seatsTaken } from './api.js';
import { windDownAtMs } from './config.js';
import {
  aiMoveLatency, gameAborts, gameShapeUnformable, gamesActiveDelta, gamesCompleted, moveE2eLatency, moveStalled,
  playersActiveDelta, seatLost, setPhase, tagOf, wsErrors, wsRateLimited,
} from './metrics.js';
import * as sio from './sio.js';

const CONNECT_TIMEOUT_MS = 10000; // WebSocket open -> Socket.IO `40{sid}`
const START_TIMEOUT_MS = 30000; // join_game -> game_state with the game active and all seats
const WATCHDOG_MS = 250;
const MAX_JOIN_ATTEMPTS = 3;
const MATCH_WAIT_MS = [1000, 3000]; // jittered wait for a joinable game before creating one
const FILL_POLL_MS = 3000; // creator/joiner of a waiting game: GET the game this often
const UNFORMABLE_BACKOFF_MS = [5000, 10000];
const RETRY_MS = 1000;
const BETWEEN_GAMES_MS = [100, 600];
const MAX_MOVE_REJECTS = 3;
const MAX_JOIN_REFUSALS = 3; // join_game refused while our seat is still ours: try again, then leave
const STATE_FETCH_EVERY = 5; // GET /api/games/:id (tag game_state) during the think time of every 5th own move
const LOBBY_MAX = 50;
const LOBBY_MAX_AGE_MS = 60000;
const TERMINAL = { completed: true, abandoned: true, finished: true, cancelled: true };

function jitter(range) {
  return range[0] + Math.random() * (range[1] - range[0]);
}

function isObj(v) {
  return v !== null && typeof v === 'object';
}

/**
 * Candidates in random order: every idle player sees the same list and the same lobby events,
 * and all of them trying the oldest game first is a herd (RingRift answered 74 joins of one
 * 3-seat game with 200).
 */
function shuffled(list) {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const t = list[i];
    list[i] = list[j];
    list[j] = t;
  }
  return list;
}

export class Player {
  constructor(cfg, api) {
    this.cfg = cfg;
    this.api = api;
    const g = cfg.game;
    this.maxPlayers = g.playersPerGame;
    this.aiSeats = g.aiSeats;
    this.humans = g.playersPerGame - g.aiSeats;
    this.thinkMs = g.thinkTimeMs;
    this.stallMs = g.stallMs;
    this.movesPerGame = g.movesPerGame;
    this.gamesPerSession = g.gamesPerSession;
    this.moveTimeoutMs = Math.min(30000, Math.max(10000, 5 * g.stallMs));
    // No game_state at all for this long in a started game means it is stuck: leave. States come
    // after every move (human or AI); an AI move takes at most the AI timeout.
    this.idleTimeoutMs = Math.min(60000, Math.max(20000, 4 * g.thinkTimeMs + 2 * g.stallMs + 15000));
    this.fillTimeoutMs = Math.min(60000, Math.max(15000, 10 * g.thinkTimeMs));
    this.listQuery = `boardType=${encodeURIComponent(g.boardType)}&maxPlayers=${g.playersPerGame}&limit=20`;
    const body = {
      boardType: g.boardType,
      timeControl: { type: g.timeControl.type, initialTime: g.timeControl.initialTime, increment: g.timeControl.increment },
      isRated: false,
      isPrivate: false,
      maxPlayers: g.playersPerGame,
    };
    if (g.aiSeats > 0) body.aiOpponents = { count: g.aiSeats, difficulty: g.aiDifficulties };
    this.createBody = JSON.stringify(body);
    this.wsParams = { tags: { name: 'ws_play' }, headers: api.wsHeaders };
    this.windDownAt = windDownAtMs(cfg.stages);
    this.s = null;
  }

  /** True once the players scenario ramps down to its end (config.windDownAtMs). */
  windingDown(now) {
    return now - exec.scenario.startTime >= this.windDownAt;
  }

  /** One iteration: token, one Socket.IO session with up to gamesPerSession games. */
  iteration() {
    if (this.windingDown(Date.now())) {
      sleep(1); // k6 stops this VU within gracefulRampDown
      return;
    }
    if (!this.api.ensureToken()) {
      sleep(this.api.backoffMs(RETRY_MS * (1 + Math.random())) / 1000);
      return;
    }
    const s = {
      socket: null, openedAt: Date.now(), connected: false, sampled: false, closing: false,
      mode: 'connecting', nextAt: 0, matchDeadline: 0, gamesDone: 0, backoffMs: 0,
      lobby: {}, lobbyCount: 0, subscribed: false, g: null,
    };
    this.s = s;
    const self = this;
    setPhase();
    let res = null;
    this.api.inSession = true; // every HTTP call from here on is made from a socket callback
    try {
      res = ws.connect(this.cfg.wsUrl, this.wsParams, function (socket) {
        s.socket = socket;
        socket.on('message', (text) => self.onFrame(s, text));
        socket.on('close', () => self.onClose(s));
        socket.on('error', () => {
          // The close that follows ends the session; nothing is logged (no secrets in errors).
        });
        socket.setInterval(() => self.tick(s), WATCHDOG_MS);
      });
    } catch (e) {
      res = null;
    } finally {
      this.api.inSession = false;
    }
    if (!s.sampled) {
      // The handshake itself failed (no 101) or the socket died before the Socket.IO connect.
      this.connectSample(s, res && res.status && res.status !== 101 ? res.status : 0);
    }
    this.endGame(s, 'socket_closed');
    this.s = null;
    if (s.backoffMs > 0) sleep(s.backoffMs / 1000);
    else if (!s.connected) sleep((RETRY_MS / 1000) * (1 + Math.random()));
  }

  connectSample(s, status) {
    s.sampled = true;
    this.api.wsConnected(status);
  }

  send(s, frame) {
    if (!s.closing && s.socket !== null) s.socket.send(frame);
  }

  close(s) {
    if (s.closing) return;
    s.closing = true;
    if (s.socket !== null) s.socket.close();
  }

  // -- frames -------------------------------------------------------------------------------

  onFrame(s, text) {
    switch (sio.kind(text)) {
      case sio.EVENT: {
        const ev = sio.parseEvent(text);
        if (ev !== null) this.onEvent(s, ev[0], ev[1], Date.now());
        break;
      }
      case sio.PING:
        this.send(s, sio.PONG);
        break;
      case sio.OPEN:
        this.send(s, sio.connectFrame(this.api.token));
        break;
      case sio.CONNECTED:
        s.connected = true;
        this.connectSample(s, 101);
        this.subscribe(s, true);
        s.mode = 'idle';
        s.nextAt = 0;
        this.tick(s);
        break;
      case sio.REFUSED:
        // token refused (api.invalidate() via 401), or rate limited (429)
        if (!s.sampled) this.connectSample(s, sio.refusedStatus(text));
        this.close(s);
        break;
      case sio.DISCONNECT:
        this.close(s);
        break;
      default:
        break;
    }
  }

  onEvent(s, name, payload, now) {
    const g = s.g;
    switch (name) {
      case 'game_state': {
        const data = isObj(payload) ? payload.data : null;
        if (g !== null && isObj(data) && data.gameId === g.id && isObj(data.gameState)) {
          this.onState(s, g, data.gameState, Array.isArray(data.validMoves) ? data.validMoves : [], now, false);
        }
        break;
      }
      case 'game_over': {
        const data = isObj(payload) ? payload.data : null;
        if (g !== null && isObj(data) && data.gameId === g.id) {
          if (isObj(data.gameState)) this.onState(s, g, data.gameState, [], now, true);
          g.endedSeen = true;
          if (s.g !== g) break; // already ended while reading the final state
          if (g.started) {
            setPhase();
            gamesCompleted.add(1);
          } else {
            gameAborts.add(1, tagOf('reason', 'ended_before_start'));
          }
          this.endGame(s, null);
        }
        break;
      }
      case 'player_choice_required':
        if (g !== null && g.started && isObj(payload) && payload.gameId === g.id && payload.playerNumber === g.me &&
            Array.isArray(payload.options) && payload.options.length > 0) {
          this.send(s, sio.event('player_choice_response', {
            choiceId: payload.id, playerNumber: g.me, choiceType: payload.type, selectedOption: payload.options[0],
          }));
        }
        break;
      case 'error':
        this.onServerError(s, g, isObj(payload) ? payload : {});
        break;
      case 'lobby:game_created':
        this.onLobbyCreated(s, payload, now);
        break;
      case 'lobby:game_joined':
        if (isObj(payload)) {
          if (g !== null && payload.gameId === g.id && typeof payload.playerCount === 'number') {
            g.joiners = payload.playerCount - 1;
          }
          if (typeof payload.playerCount === 'number' && payload.playerCount >= this.humans) this.unlist(s, payload.gameId);
          if (g !== null && payload.gameId === g.id && s.mode === 'filling' && payload.playerCount >= this.humans) {
            this.sendJoin(s, g);
          }
        }
        break;
      case 'lobby:game_started':
        if (isObj(payload)) {
          this.unlist(s, payload.gameId);
          if (g !== null && payload.gameId === g.id && s.mode === 'filling') this.sendJoin(s, g);
        }
        break;
      case 'lobby:game_cancelled':
        if (isObj(payload)) {
          this.unlist(s, payload.gameId);
          // (RingRift also announces a resigned active game as cancelled: game_over ends those.)
          if (g !== null && payload.gameId === g.id && !g.started) {
            g.endedSeen = true;
            gameAborts.add(1, tagOf('reason', 'cancelled'));
            this.endGame(s, null);
          }
        }
        break;
      default:
        break;
    }
  }

  // -- lobby map ------------------------------------------------------------------------------

  subscribe(s, on) {
    if (s.subscribed === on) return;
    s.subscribed = on;
    if (on) {
      s.lobby = {};
      s.lobbyCount = 0;
    }
    // Only multi-human games need the lobby; keep the subscription off while playing.
    if (this.humans > 1) this.send(s, sio.event(on ? 'lobby:subscribe' : 'lobby:unsubscribe'));
  }

  fits(game) {
    if (!isObj(game) || typeof game.id !== 'string') return false;
    if (game.status !== undefined && game.status !== 'waiting') return false;
    if (game.boardType !== undefined && game.boardType !== this.cfg.game.boardType) return false;
    if (game.maxPlayers !== undefined && game.maxPlayers !== this.maxPlayers) return false;
    const ai = isObj(game.gameState) && isObj(game.gameState.aiOpponents) ? game.gameState.aiOpponents.count || 0 : 0;
    if (ai !== this.aiSeats) return false;
    // Full already (RingRift keeps a full game listed, and a further join overwrites a seat).
    if (seatsTaken(game) >= this.humans) return false;
    const me = this.api.userId;
    if (game.player1Id === me || game.player2Id === me || game.player3Id === me || game.player4Id === me) return false;
    if (isObj(game.player1) && game.player1.id === me) return false;
    return true;
  }

  onLobbyCreated(s, game, now) {
    if (!this.fits(game) || s.lobby[game.id] !== undefined) return;
    if (s.lobbyCount >= LOBBY_MAX) this.pruneLobby(s, now, true);
    s.lobby[game.id] = { game, at: now };
    s.lobbyCount++;
    if (s.mode === 'matching' && s.g === null) {
      this.tryJoin(s, [game]);
    } else if (s.mode === 'filling' && s.g !== null) {
      this.mergeInto(s, s.g, game);
    }
  }

  /**
   * Creators who announced games at the same moment would all wait for each other: a creator
   * whose game nobody joined yet moves to a fitting game created before its own (join it, then
   * leave its own, which cancels it). Only older games qualify, so the oldest one always stays.
   */
  mergeInto(s, g, game) {
    if (!g.creator || g.joiners > 0 || typeof game.createdAt !== 'string' || typeof g.createdAt !== 'string' ||
        !(game.createdAt < g.createdAt)) return;
    const joined = this.api.joinGame(game.id);
    this.unlist(s, game.id);
    if (!joined.joined || s.g !== g || s.mode !== 'filling') return;
    this.api.leaveGame(g.id, true);
    s.g = null;
    gameAborts.add(1, tagOf('reason', 'merged'));
    const next = this.newGame(s, game.id, false);
    if (joined.game !== null && seatsTaken(joined.game) >= this.humans) this.sendJoin(s, next);
    else this.waitForSeats(s, next);
  }

  unlist(s, id) {
    if (typeof id === 'string' && s.lobby[id] !== undefined) {
      delete s.lobby[id];
      s.lobbyCount--;
    }
  }

  pruneLobby(s, now, dropOldest) {
    let oldestId = null;
    let oldestAt = Infinity;
    Object.keys(s.lobby).forEach((id) => {
      const entry = s.lobby[id];
      if (now - entry.at > LOBBY_MAX_AGE_MS) this.unlist(s, id);
      else if (entry.at < oldestAt) {
        oldestAt = entry.at;
        oldestId = id;
      }
    });
    if (dropOldest && s.lobbyCount >= LOBBY_MAX && oldestId !== null) this.unlist(s, oldestId);
  }

  lobbyCandidates(s, now) {
    this.pruneLobby(s, now, false);
    return shuffled(Object.keys(s.lobby).map((id) => s.lobby[id].game));
  }

  // -- the session's clock ------------------------------------------------------------------

  tick(s) {
    if (s.closing) return;
    const now = Date.now();
    if (!s.connected) {
      if (now - s.openedAt > CONNECT_TIMEOUT_MS) {
        if (!s.sampled) this.connectSample(s, 0);
        this.close(s);
      }
      return;
    }
    const g = s.g;
    if (this.windingDown(now)) {
      if (g !== null) this.leave(s, g, 'wind_down');
      this.close(s);
      return;
    }
    if (this.api.dueForRefresh(now) && !this.api.ensureToken()) {
      // No token: the game goes on over the socket; the next HTTP call logs in again.
    }
    switch (s.mode) {
      case 'idle':
        if (s.gamesDone >= this.gamesPerSession) this.close(s);
        else if (now >= s.nextAt) this.startMatch(s, now);
        break;
      case 'matching':
        if (now >= s.matchDeadline) this.create(s);
        break;
      case 'filling':
        if (now > g.deadline) {
          this.leave(s, g, 'fill_timeout');
        } else if (now >= g.pollAt) {
          this.pollWaiting(s, g);
        }
        break;
      case 'joining':
        if (now > g.deadline) this.leave(s, g, 'start_timeout');
        break;
      case 'playing':
        if (g.pendingAt > 0 && now - g.pendingAt > this.moveTimeoutMs) {
          setPhase();
          moveStalled.add(true);
          g.pendingAt = 0;
          this.leave(s, g, 'move_timeout');
        } else if (!g.moveScheduled && g.pendingAt === 0 && now - g.lastStateAt > this.idleTimeoutMs) {
          this.leave(s, g, 'idle_timeout');
        }
        break;
      default:
        break;
    }
  }

  // -- matchmaking ----------------------------------------------------------------------------

  startMatch(s, now) {
    if (!this.api.ensureToken()) {
      s.nextAt = now + this.api.backoffMs(RETRY_MS * (1 + Math.random()));
      return;
    }
    if (this.humans === 1) {
      this.create(s);
      return;
    }
    const listed = this.api.listGames(this.listQuery);
    let candidates;
    if (listed !== null) {
      candidates = shuffled(listed.filter((game) => this.fits(game)));
    } else {
      if (this.api.token === null) { // 401: log in again first
        s.nextAt = Date.now() + RETRY_MS;
        return;
      }
      candidates = this.lobbyCandidates(s, Date.now());
    }
    if (this.tryJoin(s, candidates)) return;
    s.mode = 'matching';
    s.matchDeadline = Date.now() + jitter(MATCH_WAIT_MS);
  }

  /** Join the first game of `candidates` that takes us; true when seated. */
  tryJoin(s, candidates) {
    let attempts = 0;
    for (let i = 0; i < candidates.length && attempts < MAX_JOIN_ATTEMPTS; i++) {
      const game = candidates[i];
      attempts++;
      const joined = this.api.joinGame(game.id);
      this.unlist(s, game.id);
      if (joined.joined) {
        const g = this.newGame(s, game.id, false);
        if (joined.game !== null && seatsTaken(joined.game) >= this.humans) this.sendJoin(s, g);
        else this.waitForSeats(s, g);
        return true;
      }
      if (!joined.race) break; // failed (classified): create instead
    }
    return false;
  }

  create(s) {
    const game = this.api.createGame(this.createBody);
    const now = Date.now();
    if (game === null) {
      s.mode = 'idle';
      s.nextAt = now + this.api.backoffMs(RETRY_MS * (1 + Math.random()));
      return;
    }
    if (this.aiSeats > 0 && this.humans > 1 && game.status === 'active') {
      // RingRift's rule: a game with AI seats is active at creation, so no second human can
      // join. The shape of this scenario cannot be formed: count it, leave, back off.
      setPhase();
      gameShapeUnformable.add(1);
      this.api.leaveGame(game.id, true);
      s.mode = 'idle';
      s.nextAt = now + jitter(UNFORMABLE_BACKOFF_MS);
      return;
    }
    const g = this.newGame(s, game.id, true);
    g.createdAt = typeof game.createdAt === 'string' ? game.createdAt : null;
    if (this.humans === 1 || game.status === 'active') this.sendJoin(s, g);
    else this.waitForSeats(s, g);
  }

  newGame(s, id, creator) {
    const g = {
      id, creator, started: false, endedSeen: false, deadline: 0, pollAt: 0,
      me: 0, isAi: {}, measureAi: false, lastStateAt: Date.now(), lastLen: 0, current: 0, validMoves: [],
      pendingAt: 0, pendingLen: 0, moveScheduled: false, rejects: 0, ownMoves: 0, leaving: false,
      aiAt: 0, aiSeat: 0, aiLen: 0, joiners: 0, createdAt: null, aiCount: 0, joinRefusals: 0,
    };
    s.g = g;
    return g;
  }

  waitForSeats(s, g) {
    s.mode = 'filling';
    const now = Date.now();
    g.deadline = now + this.fillTimeoutMs;
    g.pollAt = now + FILL_POLL_MS;
  }

  /** A seated player of a waiting game looks at it (lobby events may be missed or absent). */
  pollWaiting(s, g) {
    const got = this.api.gameState(g.id, true);
    g.pollAt = Date.now() + FILL_POLL_MS;
    if (s.g !== g || s.mode !== 'filling') return;
    if (got.status === 404) {
      g.endedSeen = true; // counted as a mismatch by api.gameState
      gameAborts.add(1, tagOf('reason', 'lost_game'));
      this.endGame(s, null);
      return;
    }
    const game = got.game;
    if (game === null) return;
    g.joiners = Math.max(g.joiners, seatsTaken(game) - 1);
    if (TERMINAL[game.status]) { // first: a cancelled game may no longer list anybody's seat
      g.endedSeen = true;
      gameAborts.add(1, tagOf('reason', 'cancelled'));
      this.endGame(s, null);
    } else if (!seated(game, this.api.userId)) {
      seatLost('poll'); // our 200 join was overwritten by a later one: not a participant, nothing to leave
      this.endGame(s, null);
    } else if (game.status === 'active' || seatsTaken(game) >= this.humans) {
      this.sendJoin(s, g);
    }
  }

  /**
   * join_game, once the game has all its human seats: RingRift builds a game's session at the
   * first join_game and never adds players to it later, so joining the room early would leave
   * the game waiting for ever.
   */
  sendJoin(s, g) {
    s.mode = 'joining';
    g.deadline = Date.now() + START_TIMEOUT_MS;
    this.send(s, sio.event('join_game', { gameId: g.id }));
  }

  // -- a game ---------------------------------------------------------------------------------

  onState(s, g, gs, validMoves, now, over) {
    g.lastStateAt = now;
    const hist = Array.isArray(gs.moveHistory) ? gs.moveHistory : [];
    const len = hist.length;
    if (!g.started) {
      if (s.mode !== 'joining' && s.mode !== 'filling') return;
      if (gs.gameStatus === 'active' && Array.isArray(gs.players) && gs.players.length >= this.maxPlayers) {
        if (!this.startGame(s, g, gs)) return;
      } else {
        if (TERMINAL[gs.gameStatus]) {
          g.endedSeen = true;
          gameAborts.add(1, tagOf('reason', 'ended_before_start'));
          this.endGame(s, null);
        }
        return;
      }
    }
    // The answer to our move: the first state whose history grew past its length at send time
    // with our move in the first new entry (RingRift appends resolved decisions after it and gives
    // the recorded move a fresh id, so the player number identifies it).
    if (g.pendingAt > 0 && len > g.pendingLen) {
      const entry = hist[g.pendingLen];
      if (isObj(entry) && entry.player === g.me) {
        const latency = now - g.pendingAt;
        g.pendingAt = 0;
        g.rejects = 0;
        setPhase();
        moveE2eLatency.add(latency);
        moveStalled.add(latency > this.stallMs);
      }
    }
    if (g.measureAi) this.measureAi(g, gs, hist, len, now, over);
    g.lastLen = len;
    g.current = gs.currentPlayer;
    if (over || gs.gameStatus !== 'active') return; // game_over ends it
    if (gs.currentPlayer !== g.me) return;
    if (validMoves.length > 0) g.validMoves = validMoves;
    if (g.pendingAt > 0 || g.moveScheduled || validMoves.length === 0 || g.leaving) return;
    if (len >= this.movesPerGame) {
      this.leave(s, g, null); // played enough: leave (resign) at our turn
      return;
    }
    this.scheduleMove(s, g);
  }

  /** AI moves are measured once, by the lowest-numbered human seat: AI seat current -> its move. */
  measureAi(g, gs, hist, len, now, over) {
    if (g.aiAt > 0 && len > g.aiLen) {
      const entry = hist[g.aiLen];
      if (isObj(entry) && entry.player === g.aiSeat) {
        setPhase();
        aiMoveLatency.add(now - g.aiAt);
      }
      g.aiAt = 0;
    }
    if (!over && g.aiAt === 0 && gs.gameStatus === 'active' && g.isAi[gs.currentPlayer] === true) {
      g.aiAt = now;
      g.aiSeat = gs.currentPlayer;
      g.aiLen = len;
    }
  }

  startGame(s, g, gs) {
    const me = this.api.userId;
    let mine = 0;
    let lowestHuman = 99;
    let ai = 0;
    for (let i = 0; i < gs.players.length; i++) {
      const p = gs.players[i];
      if (!isObj(p)) continue;
      if (p.type === 'ai') {
        g.isAi[p.playerNumber] = true;
        ai++;
      } else if (p.playerNumber < lowestHuman) {
        lowestHuman = p.playerNumber;
      }
      if (p.id === me && p.type !== 'ai') mine = p.playerNumber;
    }
    if (!mine) {
      // Our HTTP join was answered 200 but the seat went to someone else (RingRift's join has no
      // lock: two joins of the last seat can both succeed). Not a participant: nothing to leave.
      seatLost('start');
      this.endGame(s, null);
      return false;
    }
    g.me = mine;
    g.started = true;
    g.creator = mine === 1; // player1 is the game's creator
    g.measureAi = ai > 0 && mine === lowestHuman;
    s.mode = 'playing';
    this.subscribe(s, false);
    setPhase();
    if (g.creator) {
      gamesActiveDelta.add(1);
      playersActiveDelta.add(1 + ai);
    } else {
      playersActiveDelta.add(1);
    }
    g.aiCount = ai;
    return true;
  }

  scheduleMove(s, g) {
    g.moveScheduled = true;
    const began = Date.now();
    g.ownMoves++;
    if (g.ownMoves % STATE_FETCH_EVERY === 1 && this.api.ensureToken()) {
      // Look at the game over HTTP while thinking (the fetch time comes out of the think time).
      const got = this.api.gameState(g.id, !g.endedSeen);
      if (got.status === 404) g.endedSeen = true;
    }
    const think = this.thinkMs * (0.75 + 0.5 * Math.random());
    const wait = Math.max(1, think - (Date.now() - began));
    s.socket.setTimeout(() => this.sendMove(s, g), wait);
  }

  sendMove(s, g) {
    g.moveScheduled = false;
    if (s.g !== g || s.closing || !g.started || g.current !== g.me || g.validMoves.length === 0 || g.pendingAt > 0) return;
    const move = g.validMoves[Math.floor(Math.random() * g.validMoves.length)];
    if (!isObj(move) || typeof move.id !== 'string') return;
    this.send(s, sio.event('player_move_by_id', { gameId: g.id, moveId: move.id }));
    g.pendingAt = Date.now();
    g.pendingLen = g.lastLen;
  }

  onServerError(s, g, msg) {
    setPhase();
    const code = msg.code;
    const ev = msg.event;
    wsErrors.add(1, tagOf('code', code));
    if (code === 'RATE_LIMITED') {
      wsRateLimited();
      if (g === null || s.closing) return;
      if (ev === 'player_move_by_id' && g.pendingAt > 0) {
        g.pendingAt = 0; // refused, not stalled: try again shortly
        g.moveScheduled = true;
        s.socket.setTimeout(() => this.sendMove(s, g), RETRY_MS);
      } else if (ev === 'join_game' && s.mode === 'joining') {
        s.socket.setTimeout(() => {
          if (s.g === g && s.mode === 'joining') this.send(s, sio.event('join_game', { gameId: g.id }));
        }, RETRY_MS);
      }
      return;
    }
    if (g === null) return;
    if (code === 'GAME_NOT_FOUND' && (ev === 'join_game' || ev === 'player_move_by_id' || ev === 'player_choice_response')) {
      // The server does not know the game we created or joined: confirm over HTTP, where a 404
      // counts as an id-lifecycle mismatch.
      if (!g.endedSeen) this.api.gameState(g.id, true);
      g.endedSeen = true;
      gameAborts.add(1, tagOf('reason', 'lost_game'));
      this.endGame(s, null);
      return;
    }
    if (ev === 'join_game' && s.mode === 'joining') {
      // join_game refused (RingRift: ACCESS_DENIED, or INTERNAL_ERROR "Error joining game" for a
      // user its HTTP join admitted but whose seat a later join took). Look at the seats first:
      // not ours → seat lost, no leave (it would be a 403); ours → try again until the start
      // deadline, then leave (start_timeout).
      const got = this.api.ensureToken() ? this.api.gameState(g.id, true) : { status: 0, game: null };
      if (s.g !== g || s.mode !== 'joining') return;
      g.joinRefusals++;
      if (got.status === 404) {
        g.endedSeen = true; // counted as a mismatch by api.gameState, once
        gameAborts.add(1, tagOf('reason', 'lost_game'));
        this.endGame(s, null);
      } else if (got.game !== null && TERMINAL[got.game.status]) {
        g.endedSeen = true;
        gameAborts.add(1, tagOf('reason', 'ended_before_start'));
        this.endGame(s, null);
      } else if (got.game !== null && !seated(got.game, this.api.userId)) {
        seatLost('join_game');
        this.endGame(s, null);
      } else if (code === 'ACCESS_DENIED' || g.joinRefusals >= MAX_JOIN_REFUSALS) {
        this.leave(s, g, code === 'ACCESS_DENIED' ? 'join_denied' : 'join_refused');
      } else {
        s.socket.setTimeout(() => {
          if (s.g === g && s.mode === 'joining') this.send(s, sio.event('join_game', { gameId: g.id }));
        }, RETRY_MS);
      }
      return;
    }
    if (ev === 'player_move_by_id' && g.pendingAt > 0) {
      // MOVE_REJECTED (or "game is not active"): the move is gone, not stalled. Try another one.
      g.pendingAt = 0;
      g.rejects++;
      if (g.rejects > MAX_MOVE_REJECTS) {
        this.leave(s, g, 'move_rejected');
        return;
      }
      g.moveScheduled = true;
      s.socket.setTimeout(() => this.sendMove(s, g), 200);
    }
  }

  /** Leave the game over HTTP (waiting: give up the seat; active: resign), then end it here. */
  leave(s, g, reason) {
    if (g.leaving || s.g !== g) return;
    g.leaving = true;
    // A joiner leaving a game that has not started may find its seat gone (a 403, see seatLost);
    // the creator's seat 1 is never overwritten, so its 403 stays a game_leave failure.
    const left = this.api.ensureToken() ? this.api.leaveGame(g.id, !g.endedSeen, !g.started && !g.creator) : 'failed';
    if (left === 'not_seated') seatLost('leave'); // one abort per game: seat_lost, not also `reason`
    else if (reason !== null) gameAborts.add(1, tagOf('reason', reason));
    this.endGame(s, null);
  }

  /** Close the concurrency intervals of the current game exactly once and go back to idle. */
  endGame(s, reason) {
    const g = s.g;
    if (g === null) return;
    s.g = null;
    if (reason !== null && g.started) gameAborts.add(1, tagOf('reason', reason));
    if (g.pendingAt > 0 && Date.now() - g.pendingAt > this.stallMs) {
      setPhase();
      moveStalled.add(true); // no answer in time, and none can come now
    }
    g.pendingAt = 0;
    if (g.started) {
      setPhase();
      if (g.creator) {
        gamesActiveDelta.add(-1);
        playersActiveDelta.add(-1 - g.aiCount);
      } else {
        playersActiveDelta.add(-1);
      }
      s.gamesDone++;
    }
    if (!s.closing) {
      this.send(s, sio.event('leave_game', { gameId: g.id }));
      this.subscribe(s, true);
      s.mode = 'idle';
      s.nextAt = Date.now() + jitter(BETWEEN_GAMES_MS);
    }
  }

  onClose(s) {
    s.closing = true;
    if (!s.sampled) this.connectSample(s, 0);
    this.endGame(s, 'socket_closed');
  }
}
