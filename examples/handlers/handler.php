<?php
// A crmchat (Bitrix24) event handler for PHP's built-in server; see docs/events.md.
//   APPLICATION_TOKEN=demo-app-token php -S 127.0.0.1:8000 handler.php
// then bind http://127.0.0.1:8000/ with event.bind. Prints one line per event: its name and its data as JSON.

// PHP reads the form body into $_POST: data[CHAT_ID]=8773 is $_POST['data']['CHAT_ID'].
$event = $_POST['event'] ?? '';
$data = $_POST['data'] ?? [];
$token = $_POST['auth']['application_token'] ?? '';

// Every delivery carries the application's token: anything else did not come from the portal.
if ($token === '' || !hash_equals(getenv('APPLICATION_TOKEN') ?: '', $token)) {
    http_response_code(403);
    exit;
}

// The built-in server's standard output is the terminal; echo would go into the answer.
file_put_contents('php://stdout', $event . ' ' . json_encode($data, JSON_UNESCAPED_SLASHES) . "\n");
// The answer: 200, which is a delivery (anything else is retried). Its body does not matter.
http_response_code(200);
