module.exports = {
  // comment
  host: 'smtp.gmail.com', port: process.env.PORT || 465, secure: true,
  auth: { type: 'OAuth2', user: "me@example.com", clientId: `id-${process.env.ID}`, },
  list: [1, -2.5e3, null, undefined, 'x\u00e9'],
};
