-- access.lua: who may see the screen and who may drive it.
--
-- Two secret tokens: the control token (sees and sends input) and the view
-- token (sees only). Each comes from the environment (SCREENSHARE_TOKEN,
-- SCREENSHARE_VIEW_TOKEN) or is made at start from /dev/urandom. A password
-- (SCREENSHARE_PASSWORD) may be configured as well: the login page trades it
-- for a cookie holding the control token. Comparisons take the same time
-- whatever the guess, so a token cannot be found byte by byte.
local M = {}

local MIN_LEN = 16
local COOKIE = "screenshare"

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- n random bytes as URL-safe base64 (n a multiple of 3: no padding).
local function random_token(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(n)
  f:close()
  local out = {}
  for i = 1, n, 3 do
    local a, b, c = raw:byte(i, i + 2)
    local v = a << 16 | b << 8 | c
    for shift = 18, 0, -6 do
      local k = (v >> shift & 63) + 1
      out[#out + 1] = B64:sub(k, k)
    end
  end
  return table.concat(out)
end

local function configured(name)
  local t = os.getenv(name)
  if t == nil or t == "" then return random_token(24) end
  if #t < MIN_LEN or not t:match("^[%w%-_%.~]+$") then
    error(name .. " must be at least " .. MIN_LEN .. " URL-safe characters (A-Z a-z 0-9 - _ . ~)", 0)
  end
  return t
end

-- Equal strings, in time that depends on the length of b only.
local function same(a, b)
  if type(a) ~= "string" then return false end
  local diff = #a ~ #b
  for i = 1, #b do
    diff = diff | ((a:byte(i) or 0) ~ b:byte(i))
  end
  return diff == 0
end

function M.new()
  local self = {control = configured("SCREENSHARE_TOKEN"), view = configured("SCREENSHARE_VIEW_TOKEN")}
  self.password = os.getenv("SCREENSHARE_PASSWORD")
  if self.password == "" then self.password = nil end
  if same(self.control, self.view) then error("SCREENSHARE_TOKEN and SCREENSHARE_VIEW_TOKEN must differ", 0) end
  self.origins = {}
  for o in (os.getenv("SCREENSHARE_ORIGINS") or ""):gmatch("[^,%s]+") do self.origins[#self.origins + 1] = o end
  return setmetatable(self, {__index = M})
end

-- "control", "view" or nil for a token (both compared, whichever matches).
function M:role_of(token)
  local control, view = same(token, self.control), same(token, self.view)
  return control and "control" or view and "view" or nil
end

-- The request's role: from ?token= or, after a login, the cookie.
function M:role(request)
  return self:role_of(request:data("token")) or self:role_of(request:cookie(COOKIE))
end

-- A correct password sets the cookie that stands for the control token.
function M:login(request, password)
  if not self.password or not same(password, self.password) then return false end
  local secure = request:issecure() and "; Secure" or ""
  request:setheader("Set-Cookie", COOKIE .. "=" .. self.control .. "; Path=/; HttpOnly; SameSite=Strict" .. secure)
  return true
end

-- The origins a browser may open the WebSocket from: this server as the
-- request named it, and any configured in SCREENSHARE_ORIGINS.
function M:allowed_origins(request)
  local list = {(request:issecure() and "https://" or "http://") .. (request:header("Host") or "")}
  for _, o in ipairs(self.origins) do list[#list + 1] = o end
  return list
end

return M
