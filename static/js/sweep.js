// The sweep page: its experiments' curves overlaid (static/js/curves.js).
Curves.drawAll(Curves.data("curves-data"));
